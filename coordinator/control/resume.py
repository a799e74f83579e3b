"""``coordinator resume``: which instances of a stored run go on, and the state they go on
from. Pure: rows in, decisions and seeded state out.

A run is resumed in the same orchestration by a new coordinator process (after a crash, a
kill -9, a reboot, a stop): the instances that did not complete are launched again as new
attempts that continue their own claude sessions; the others keep what they have. Tokens,
cost, tool calls and the attempt log carry on from the database, never reset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.db.rows import InstanceRow, OrchestrationRow
from coordinator.engine.state import AttemptRecord, InstanceState, Status
from coordinator.errors import UsageError
from runner.events import Usage

# Stored statuses of an instance that did not finish on its own: its coordinator was
# killed (running, waiting, ...), or it ended without completing.
UNFINISHED = frozenset(
    {"pending", "starting", "running", "waiting", "paused", "retrying", "rate_limited"}
)
ENDED_INCOMPLETE = frozenset({"failed", "timeout", "cancelled", "interrupted", "lost"})
BUDGET_ENDS = frozenset({"blocked", "skipped"})
NOT_RESUMED = "not resumed"


@dataclass(frozen=True, slots=True)
class ResumeChoice:
    relaunch: tuple[str, ...]  # instance names, in the plan's order
    kept: tuple[str, ...]  # everything else: keeps its stored status
    why_not: dict[str, str]  # asked for by name but not relaunched: why


def check_owner(orch: OrchestrationRow) -> None:
    """A run a live coordinator still owns is not resumed (stop it first)."""
    if orch.status == "running":
        seen = f", last seen {orch.last_seen_at:%Y-%m-%d %H:%M:%S %Z}" if orch.last_seen_at else ""
        raise UsageError(
            f"orchestration {orch.id} is still running on {orch.host}{seen}: "
            f"stop it first (coordinator stop {orch.id}), or wait until it ends"
        )


def choose(
    plan_names: Iterable[str],
    rows: Mapping[str, InstanceRow],
    wanted: Iterable[str] = (),
    *,
    include_blocked: bool = False,
) -> ResumeChoice:
    """Which instances a resume launches again: every one that did not complete (or only
    those ``wanted``); blocked and skipped ones only with ``include_blocked``."""
    names = list(plan_names)
    asked = list(dict.fromkeys(wanted))
    unknown = [n for n in asked if n not in names]
    if unknown:
        raise UsageError(
            f"--instance {unknown[0]!r}: no such instance in this run "
            f"(its instances: {', '.join(names)})"
        )
    missing = [n for n in rows if n not in names]
    if missing:
        raise UsageError(
            f"instance {missing[0]!r} of the stored run is not in the config any more: "
            "resume with the config it ran with (--config)"
        )
    relaunch: list[str] = []
    why_not: dict[str, str] = {}
    for name in names:
        if asked and name not in asked:
            continue
        row = rows.get(name)
        status = row.status if row is not None else "pending"
        if status == "completed":
            why_not[name] = "completed already"
        elif status in BUDGET_ENDS and not include_blocked:
            why_not[name] = f"{status} by a budget (--include-blocked to resume it)"
        else:
            relaunch.append(name)
    kept = tuple(n for n in names if n not in relaunch)
    return ResumeChoice(tuple(relaunch), kept, {n: w for n, w in why_not.items() if n in asked})


def seed_state(state: InstanceState, row: InstanceRow | None, *, relaunch: bool) -> None:
    """Put what the database holds of an instance into its fresh live state."""
    if row is None:
        return
    carry: dict[str, Any] = row.carry or {}
    state.accountant.seed(
        Usage(
            row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_creation_tokens
        ),
        row.cost_usd,
        dict(row.tool_calls),
        num_turns=int(carry.get("num_turns", row.turns)),
        ok_results=int(carry.get("turns_done", 0)),
        messages=int(carry.get("api_messages", 0)),
    )
    state.attempts = row.attempts
    state.session_exists = bool(carry.get("session_exists", row.attempts > 0))
    state.turns_sent = int(carry.get("turns_sent", 0))
    state.attempt_log = [_record(item) for item in carry.get("attempt_log", [])]
    state.milestones.reached.extend(int(p) for p in carry.get("milestones", []))
    state.progress.resume_at(state.turns_done, row.progress_pct or 0.0)
    state.wait_s = row.wait_s
    state.pid = row.pid
    if row.started_at is not None:
        state.started_unix = row.started_at.timestamp()
    if relaunch:
        if row.status in UNFINISHED:  # the coordinator died under it: close that attempt
            state.attempt_log.append(
                AttemptRecord(
                    attempt=row.attempts,
                    status="lost",
                    started_unix=None,
                    ended_unix=None,
                    exit_code=None,
                    error="its coordinator stopped",
                    total_tokens=row.total_tokens,
                    cost_usd=row.cost_usd,
                    resumed=False,
                    then="resumed by coordinator resume",
                )
            )
        state.last_event = "resuming"
        return
    state.measure.stored = row.measures or None
    status = row.status if row.status not in UNFINISHED else "cancelled"
    state.status = Status(status) if status in Status.__members__.values() else Status.FAILED
    state.exit_code = row.exit_code
    state.error = row.error
    state.reason = row.reason if row.status not in UNFINISHED else NOT_RESUMED
    state.last_event = state.reason or status
    if row.ended_at is not None:
        state.ended_unix = row.ended_at.timestamp()


def _record(item: Mapping[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        attempt=int(item.get("attempt", 0)),
        status=str(item.get("status", "?")),
        started_unix=item.get("started_unix"),
        ended_unix=item.get("ended_unix"),
        exit_code=item.get("exit_code"),
        error=item.get("error"),
        total_tokens=int(item.get("total_tokens", 0)),
        cost_usd=float(item.get("cost_usd", 0.0)),
        resumed=bool(item.get("resumed", False)),
        then=item.get("then"),
    )


def launch_record(
    *,
    config_path: Path | None,
    cwd: Path,
    options: Mapping[str, Any],
    output: Path,
    flags: Mapping[str, Any],
    direct: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How a run was launched, as the database keeps it for a resume. Never secrets: the
    config's env values are read again from the config file, the DSN is not kept."""
    return {
        "config_path": str(config_path.resolve()) if config_path is not None else None,
        "direct": dict(direct) if direct is not None else None,  # a command-line instance
        "cwd": str(cwd.resolve()),
        "options": dict(options),
        "output": str(output.resolve()),
        "flags": dict(flags),
    }
