"""The pool wired into a run: the engine hands it every stream event worth an entry and
every milestone; it keeps the entries (in order, for the results and the digests) and
writes them to the store a few times a second, off the stream's hot path. A store that is
away keeps them buffered; what it has not taken by the end is said, and the results file
keeps every entry either way."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from coordinator.pool.conflicts import Conflict, ConflictBook, denial_text
from coordinator.pool.digest import build_digest
from coordinator.pool.entries import Kind, PoolEntry
from coordinator.pool.extract import PoolExtractor, shown
from coordinator.pool.hook import SOCKET_ENV
from coordinator.redact import Redactor
from runner import aio
from runner.events import Event

if TYPE_CHECKING:
    from coordinator.db.store import Store
    from coordinator.engine.instance import InstanceRun
    from coordinator.engine.state import InstanceState
    from coordinator.plan import RunPlan

log = structlog.get_logger("coordinator.pool")

FLUSH_INTERVAL_S = 0.25
CLOSE_DEADLINE_S = 2.0


class PoolDriver:
    def __init__(
        self,
        plan: RunPlan,
        *,
        note: Callable[[str], None],
        run_of: Callable[[str], InstanceRun | None],
        store: Store | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self._note = note
        self._run_of = run_of
        self.entries: list[PoolEntry] = []
        self._extractors: dict[str, PoolExtractor] = {}
        self._seq: dict[str, int] = {}
        self._unwritten: list[PoolEntry] = []
        self._task: asyncio.Task[None] | None = None
        self._store_failing = False
        self.written = 0
        self.share = plan.config.orchestration.pool.share
        self._heard: dict[str, int] = {}  # per instance: entries it has been told of
        self.digests: dict[str, int] = {}  # per instance: digests sent
        self.mode = plan.config.orchestration.pool.conflicts
        self.book = ConflictBook()
        self._names = {inst.name for inst in plan.instances}
        self._server: asyncio.AbstractServer | None = None
        self._socket_dir: Path | None = None

    # ------------------------------------------------------------------ entries
    def _extractor(self, state: InstanceState) -> PoolExtractor:
        found = self._extractors.get(state.name)
        if found is None:
            run = self._run_of(state.name)
            env = run.env if run is not None else {}
            found = self._extractors[state.name] = PoolExtractor(
                self.plan.orchestration_id,
                state.name,
                str(state.plan.workspace),
                # an instance in a worktree of its own: its paths relative to that
                root=str(state.plan.workspace if state.plan.worktree else self.plan.workspace),
                redact=Redactor.for_env(env, state.plan.env),
            )
        return found

    def feed(self, state: InstanceState, event: Event) -> None:
        got = self._extractor(state).feed(event, time.time())
        for entry in got.entries:
            self.add(entry)
        for path in got.writes:
            self.wrote(state.name, path)

    def milestone(self, state: InstanceState, crossed: list[int]) -> None:
        for pct in crossed:
            self.add(self._extractor(state).milestone(pct, time.time()))

    # ------------------------------------------------------------------ conflicts
    def wrote(self, instance: str, path: str) -> None:
        """A write of ``path`` (absolute) by ``instance`` went through."""
        conflict = self.book.wrote(path, shown(path, str(self.plan.workspace)), instance)
        if conflict is not None:
            self._conflict(instance, conflict, "conflicted")

    def ask(self, instance: str, path: str) -> dict[str, object]:
        """Block mode, from the hook, before ``instance`` writes ``path``: may it?"""
        if instance not in self._names:
            return {"allow": True}
        name = shown(path, str(self.plan.workspace))
        decision = self.book.ask(path, name, instance)
        if decision.conflict is not None:
            self._conflict(instance, decision.conflict, "refused")
        return {
            "allow": decision.allow,
            "owner": decision.owner,
            "reason": "" if decision.allow else denial_text(name, decision.owner),
        }

    def _conflict(self, instance: str, conflict: Conflict, action: str) -> None:
        text = conflict.text()
        self._note(text)
        self.add(
            PoolEntry(
                orchestration_id=self.plan.orchestration_id,
                instance=instance,
                kind=Kind.CONFLICT,
                action=action,
                summary=text,
                at_unix=time.time(),
                affects=(conflict.path,),
            )
        )

    def env_for(self, instance: str) -> dict[str, str]:
        """What an instance's environment needs for the hook (block mode)."""
        if self._socket_dir is None:
            return {}
        return {SOCKET_ENV: str(self._socket_dir / "hook.sock")}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await aio.wait_for(reader.readline(), 10.0)
            request = json.loads(line)
            answer = self.ask(str(request["instance"]), str(request["path"]))
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError, KeyError, TypeError, TimeoutError) as exc:
            log.info("pool hook request not answered", error=str(exc) or type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def add(self, entry: PoolEntry) -> PoolEntry:
        seq = self._seq.get(entry.instance, 0)
        self._seq[entry.instance] = seq + 1
        entry = dataclasses.replace(entry, seq=seq)
        self.entries.append(entry)
        if self.store is not None:
            self._unwritten.append(entry)
        return entry

    # ------------------------------------------------------------------ sharing
    def turn_text(self, instance: str, text: str) -> str:
        """With sharing on: ``text`` with the digest of what the others did since
        ``instance`` last heard (its first turn: since the run began) appended."""
        if not self.share:
            return text
        start = self._heard.get(instance, 0)
        self._heard[instance] = len(self.entries)
        digest = build_digest([e for e in self.entries[start:] if e.instance != instance])
        if digest is None:
            return text
        self.digests[instance] = self.digests.get(instance, 0) + 1
        return f"{text}\n\n{digest}"

    # ------------------------------------------------------------------ store
    async def open(self) -> None:
        if self.mode == "block":  # the hook asks here: a socket in a 0700 dir of our own
            self._socket_dir = Path(tempfile.mkdtemp(prefix="coordinator-pool-"))
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self._socket_dir / "hook.sock")
            )
        if self.store is not None:
            self._task = asyncio.create_task(self._flusher(), name="pool-writer")

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered; False (and kept) if the store cannot take it now."""
        if self.store is None or not self._unwritten:
            return True
        batch = list(self._unwritten)
        try:
            await self.store.add_pool_entries(batch)
        except Exception as exc:  # away, or the orchestration row not written yet: later
            if not self._store_failing:
                log.info("pool entries not written yet", error=str(exc) or type(exc).__name__)
            self._store_failing = True
            return False
        self._store_failing = False
        del self._unwritten[: len(batch)]
        self.written += len(batch)
        return True

    async def close(self, deadline_s: float = CLOSE_DEADLINE_S) -> None:
        """Stop the hook's socket; write what is buffered, within a short deadline (the
        database sink's own final flush comes after this, with its deadline): what the
        store did not take is said, and the results file keeps every entry."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await aio.wait_for(self._server.wait_closed(), 2.0)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while self._unwritten and loop.time() < end:
            with contextlib.suppress(Exception):
                if await aio.wait_for(self.flush(), max(0.1, end - loop.time())):
                    break
            await asyncio.sleep(0.2)
        if self._unwritten:
            self._note(
                f"pool: {len(self._unwritten)} entr(ies) not written to the database "
                "(the results file has every entry)"
            )

    # ------------------------------------------------------------------ results
    def summary(self) -> dict[str, Any]:
        return {
            "entries": [e.as_dict() for e in self.entries],
            "unwritten": len(self._unwritten),
            "share": self.share,
            "conflicts_mode": self.mode,
            "conflicts": [c.as_dict() for c in self.book.conflicts.values()],
            "digests_sent": dict(self.digests),
        }
