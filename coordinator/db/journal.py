"""The local journal: rows a run could not write to Postgres, kept until it can.

When a run ends while its database is away, the final flush has a deadline; whatever is
still unwritten then (instance snapshots, checkpoints, the orchestration's final status and
results) goes to one file in ``<state dir>/journal/``, written atomically (0600). The next
coordinator command that reaches a database replays every journal file into it, in the
order the files were written, and deletes each file once all its rows are in. Every write
of a replay is idempotent (snapshot upsert, checkpoints ON CONFLICT DO NOTHING, finishing
sets the same status), so a replay cut short is simply done again.

The rows of a fleet runner's claim carry its claim epoch: replayed only where the instance
row still carries it (a runner that lost its claim while the database was away writes
nothing over the new holder's rows), else dropped and said so.

A journal of another database (its DSN is not recorded, only its masked form) is replayed
into whichever database the next command uses: the rows name their orchestration, and an
orchestration missing there is created from the journal's copy of its row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import orjson

from coordinator.db.postgres import is_transient
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.db.store import OrchestrationExistsError, Store

SUFFIX = ".jsonl"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_Row = TypeVar("_Row", InstanceRow, CheckpointRow, OrchestrationRow)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What one run could not write: replayed as a whole."""

    orchestration: OrchestrationRow
    instances: Sequence[InstanceRow] = ()
    checkpoints: Sequence[CheckpointRow] = ()
    finish: tuple[str, dict[str, Any] | None] | None = None  # (status, results)
    claim_epoch: int | None = None  # a fleet claim's rows: written only while it holds

    @property
    def rows(self) -> int:
        return len(self.instances) + len(self.checkpoints) + (1 if self.finish else 0)


def journal_dir(state_dir: Path) -> Path:
    return state_dir / "journal"


def write_journal(state_dir: Path, entry: JournalEntry) -> Path:
    """Write ``entry`` to a new file (atomically, fsynced); return its path."""
    directory = journal_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    orch_id = entry.orchestration.id
    stem = _SAFE.sub("_", orch_id)[:80] + "-" + hashlib.sha1(orch_id.encode()).hexdigest()[:8]
    path = directory / f"{time.time_ns()}-{stem}{SUFFIX}"
    lines = [_line("orchestration", entry.orchestration)]
    if entry.claim_epoch is not None:
        lines.append(orjson.dumps({"kind": "claim", "epoch": entry.claim_epoch}))
    lines += [_line("instance", row) for row in entry.instances]
    lines += [_line("checkpoint", row) for row in entry.checkpoints]
    if entry.finish is not None:
        status, results = entry.finish
        lines.append(orjson.dumps({"kind": "finish", "status": status, "results": results}))
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\n".join(lines) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_journal(path: Path) -> JournalEntry:
    """Parse one journal file; ValueError if it is not one."""
    orchestration: OrchestrationRow | None = None
    instances: list[InstanceRow] = []
    checkpoints: list[CheckpointRow] = []
    finish: tuple[str, dict[str, Any] | None] | None = None
    claim_epoch: int | None = None
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
            kind = item["kind"]
            if kind == "orchestration":
                orchestration = _row(OrchestrationRow, item["row"])
            elif kind == "instance":
                instances.append(_row(InstanceRow, item["row"]))
            elif kind == "checkpoint":
                checkpoints.append(_row(CheckpointRow, item["row"]))
            elif kind == "finish":
                finish = (str(item["status"]), item["results"])
            elif kind == "claim":
                claim_epoch = int(item["epoch"])
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a journal line ({exc})") from None
    if orchestration is None:
        raise ValueError(f"{path}: no orchestration line")
    return JournalEntry(orchestration, instances, checkpoints, finish, claim_epoch)


def pending_journals(state_dir: Path) -> list[Path]:
    directory = journal_dir(state_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


async def replay_journals(store: Store, state_dir: Path) -> list[str]:
    """Write every pending journal into ``store``; one line per file for the user.

    A file whose rows are all in is deleted. The database going away mid-replay stops the
    replay (the file stays, for next time); a file that cannot be read is set aside as
    ``*.bad`` and said so, never deleted."""
    lines: list[str] = []
    for path in pending_journals(state_dir):
        try:
            entry = read_journal(path)
        except (OSError, ValueError) as exc:
            bad = path.with_name(path.name + ".bad")
            os.replace(path, bad)
            lines.append(f"journal {bad} cannot be replayed and was set aside: {exc}")
            continue
        try:
            dropped = await _replay(store, entry)
        except Exception as exc:
            if is_transient(exc):
                lines.append(f"journal {path}: database unavailable, replay later: {exc}")
                break
            bad = path.with_name(path.name + ".bad")
            os.replace(path, bad)
            lines.append(f"journal {bad}: the database refused it, set aside: {exc}")
            continue
        path.unlink(missing_ok=True)
        if dropped:
            lines.append(
                f"journal {path.name}: {entry.rows} row(s) of {', '.join(dropped)} in "
                f"orchestration {entry.orchestration.id} dropped: another runner took "
                f"{'it' if len(dropped) == 1 else 'them'} over meanwhile"
            )
            continue
        lines.append(
            f"replayed {entry.rows} journalled row(s) of orchestration "
            f"{entry.orchestration.id} into the database ({path.name})"
        )
    return lines


@runtime_checkable
class ClaimedWriter(Protocol):
    """A store that can write a fleet claim's rows fenced by its epoch (Postgres)."""

    async def write_claimed(
        self,
        orchestration_id: str,
        epoch: int,
        instances: Sequence[InstanceRow],
        checkpoints: Sequence[CheckpointRow],
    ) -> list[str]: ...


async def _replay(store: Store, entry: JournalEntry) -> list[str]:
    """Write ``entry``; the names whose claimed rows were dropped (their claim moved on)."""
    if entry.claim_epoch is not None:  # never unfenced: a store that cannot fence drops them
        names = sorted(
            {r.name for r in entry.instances} | {c.scenario_id for c in entry.checkpoints}
        )
        if not isinstance(store, ClaimedWriter):
            return names
        return await store.write_claimed(
            entry.orchestration.id, entry.claim_epoch, entry.instances, entry.checkpoints
        )
    with contextlib.suppress(OrchestrationExistsError):
        await store.create_orchestration(entry.orchestration)
    if entry.instances:
        await store.upsert_instances(list(entry.instances))
    if entry.checkpoints:
        await store.add_checkpoints(list(entry.checkpoints))
    if entry.finish is not None:
        status, results = entry.finish
        await store.finish_orchestration(entry.orchestration.id, status, results)
    return []


def _line(kind: str, row: InstanceRow | CheckpointRow | OrchestrationRow) -> bytes:
    return orjson.dumps({"kind": kind, "row": dataclasses.asdict(row)})


def _row(cls: type[_Row], data: dict[str, Any]) -> _Row:
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    for key, value in values.items():
        if key.endswith("_at") and isinstance(value, str):
            values[key] = datetime.fromisoformat(value)
    return cls(**values)
