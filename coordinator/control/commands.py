"""Pure rules of control commands: what a command names, what each verb does to an instance
in each status, the outcome texts, and which orchestration a command line means. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from coordinator.errors import CoordinatorError, UsageError

# Instance statuses as the engine names them (coordinator.engine.state.Status values).
PENDING = "pending"
PAUSED = "paused"
FINISHED = frozenset({"completed", "failed", "timeout", "cancelled", "blocked", "skipped"})


class Verb(StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    UNPAUSE = "unpause"


class Action(StrEnum):
    NONE = "none"  # nothing to do; the text says why
    STOP = "stop"  # stop it gracefully (running) or end it without launching (pending)
    PAUSE = "pause"  # SIGSTOP its process group; a pending one does not launch
    UNPAUSE = "unpause"  # SIGCONT (unless a barrier still holds it); a pending one may launch


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    text: str  # the outcome shown to the sender, e.g. "paused", "already completed"


class ControlError(CoordinatorError):
    """A control command that cannot be sent or was refused (exit 2)."""

    exit_code = 2


class NoAckError(CoordinatorError):
    """The coordinator did not acknowledge within the wait (exit 1)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """One row of ``control_commands``."""

    id: int
    orchestration_id: str
    verb: Verb
    instances: tuple[str, ...]  # empty: every instance
    requested_by: str
    requested_at: datetime | None = None
    taken_at: datetime | None = None
    acked_at: datetime | None = None
    outcome: dict[str, str] | None = None
    error: str | None = None
    withdrawn_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.acked_at is None and self.withdrawn_at is None


# No process now, the next attempt due later (a retry's backoff, a usage limit's reset).
BETWEEN_ATTEMPTS = frozenset({"retrying", "rate_limited"})


def decide(verb: Verb, status: str) -> Decision:
    """What ``verb`` does to an instance whose status is ``status``."""
    if status in FINISHED:
        return Decision(Action.NONE, f"already {status}")
    if verb is Verb.STOP:
        if status == PENDING:
            return Decision(Action.STOP, "cancelled (never launched)")
        if status in BETWEEN_ATTEMPTS:
            return Decision(Action.STOP, "cancelled (not relaunched)")
        return Decision(Action.STOP, "cancelled")
    if verb is Verb.PAUSE:
        if status == PAUSED:
            return Decision(Action.NONE, "already paused")
        if status == PENDING:
            return Decision(Action.PAUSE, "paused (not launched until unpaused)")
        if status in BETWEEN_ATTEMPTS:
            return Decision(Action.PAUSE, "paused (not relaunched until unpaused)")
        return Decision(Action.PAUSE, "paused")
    if status != PAUSED:
        return Decision(Action.NONE, f"not paused ({status})")
    return Decision(Action.UNPAUSE, "unpaused")


def whole_run(names: Sequence[str], every: Sequence[str]) -> bool:
    """A command naming nobody, or everybody, is for the whole run."""
    return not names or set(every) <= set(names)


def check_names(orchestration_id: str, names: Sequence[str], known: Sequence[str]) -> None:
    """Every name is one of the run's instances; else one line naming the first stranger."""
    for name in names:
        if name not in known:
            listed = ", ".join(known) if known else "none recorded"
            raise ControlError(
                f"orchestration {orchestration_id}: no instance named {name!r} "
                f"(instances: {listed})",
                name=name,
            )


def outcome_lines(outcome: Mapping[str, str]) -> list[str]:
    """``worker-2: paused``, one line per instance, in the run's order."""
    return [f"{name}: {text}" for name, text in outcome.items()]


@dataclass(frozen=True, slots=True)
class Target:
    orchestration_id: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Known:
    """What the database says about the arguments of a command line."""

    first_is_orchestration: bool  # the first argument is a recorded orchestration id
    newest_running: str | None  # the newest orchestration whose status is running
    newest_names: tuple[str, ...] = field(default=())  # that one's instance names


def choose_target(args: Sequence[str], known: Known) -> Target:
    """``[ID] [NAME...]``: an explicit orchestration id, else the newest running one; a first
    argument that is an instance name of the newest running one means that one."""
    if args and known.first_is_orchestration:
        newest = known.newest_running
        if newest is not None and args[0] != newest and args[0] in known.newest_names:
            raise UsageError(
                f"{args[0]!r} is both an orchestration id and an instance of {newest}; "
                f"name both: {newest} {args[0]}"
            )
        return Target(args[0], tuple(args[1:]))
    if known.newest_running is None:
        if args:
            raise ControlError(
                f"{args[0]!r} is not an orchestration id, and no orchestration is running"
            )
        raise ControlError("no orchestration is running in this database")
    if args and args[0] not in known.newest_names:
        raise ControlError(
            f"{args[0]!r} is neither an orchestration id nor an instance of the running "
            f"orchestration {known.newest_running}"
        )
    return Target(known.newest_running, tuple(args))


def command_from_row(row: Mapping[str, Any]) -> ControlCommand:
    return ControlCommand(
        id=int(row["id"]),
        orchestration_id=row["orchestration_id"],
        verb=Verb(row["verb"]),
        instances=tuple(row["instances"] or ()),
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        taken_at=row["taken_at"],
        acked_at=row["acked_at"],
        outcome=dict(row["outcome"]) if row["outcome"] is not None else None,
        error=row["error"],
        withdrawn_at=row["withdrawn_at"],
    )
