"""Live state of one instance as the engine, the status report and the results see it."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from coordinator.barrier.rules import point_label
from coordinator.measure.record import InstanceMeasures
from coordinator.plan import PlannedInstance
from runner.accounting import Accountant
from runner.events import RateLimit
from runner.progress import MilestoneTracker, ProgressTracker


class Status(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"  # at a barrier
    RETRYING = "retrying"  # an attempt failed for a transient cause: the next one is due
    RATE_LIMITED = "rate_limited"  # the account's usage limit: resumes at its reset
    PAUSED = "paused"  # by `coordinator pause`, until `coordinator unpause`
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {
        Status.COMPLETED,
        Status.FAILED,
        Status.TIMEOUT,
        Status.CANCELLED,
        Status.BLOCKED,
        Status.SKIPPED,
    }
)


@dataclass(slots=True)
class MilestoneHit:
    pct: int
    at_unix_ms: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished process of an instance."""

    attempt: int
    status: str
    started_unix: float | None
    ended_unix: float | None
    exit_code: int | None
    error: str | None
    total_tokens: int  # the instance's total when it ended (so per attempt: differences)
    cost_usd: float
    resumed: bool  # continued the session of an earlier attempt
    then: str | None = None  # what followed: "retry in 10 s: API overloaded", ...
    limit_resets_at: float | None = None  # it ended on the account's usage limit: reset

    def as_dict(self) -> dict[str, object]:
        return {
            "attempt": self.attempt,
            "status": self.status,
            "started_unix": self.started_unix,
            "ended_unix": self.ended_unix,
            "exit_code": self.exit_code,
            "error": self.error,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "resumed": self.resumed,
            "then": self.then,
            "limit_resets_at": self.limit_resets_at,
        }


@dataclass(slots=True)
class InstanceState:
    plan: PlannedInstance
    accountant: Accountant
    progress: ProgressTracker
    milestones: MilestoneTracker
    status: Status = Status.PENDING
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    reason: str | None = None  # why it stopped early (budget, timeout, cancel)
    last_event: str = "pending"
    started_mono: float | None = None
    ended_mono: float | None = None
    started_unix: float | None = None
    ended_unix: float | None = None
    last_activity_mono: float | None = None
    wait_s: float = 0.0  # at barriers, finished waits; apart from working time
    waiting_since: float | None = None
    wait_point: str | None = None  # the barrier point it waits at
    wait_arrived: tuple[int, int] | None = None  # (arrived, expected) there, as last read
    sync_waits: list[tuple[str, float, bool]] = field(default_factory=list)  # point, s, timeout
    paused_s: float = 0.0  # paused by a control command after its start, finished pauses
    paused_since: float | None = None  # paused now (monotonic), also before its launch
    paused_wait_mark: float = 0.0  # waiting_s() when paused: a wait meanwhile counts once
    turns_sent: int = 0
    lines: int = 0
    bytes: int = 0
    skipped_lines: int = 0
    init_version: str | None = None
    rate_limit: RateLimit | None = None  # the latest rate_limit_event (subscription logins)
    milestone_hits: list[MilestoneHit] = field(default_factory=list)
    budget_notes: list[str] = field(default_factory=list)
    attempts: int = 0  # processes launched for this instance, over every coordinator run
    attempt_log: list[AttemptRecord] = field(default_factory=list)
    session_exists: bool = False  # claude has a transcript of it: a relaunch resumes it
    retry_at_unix: float | None = None  # RETRYING / RATE_LIMITED: when it goes on
    limited_attempts: int = 0  # attempts that ended on a usage limit (not failures)
    limit_waiting: bool = False  # its next attempt waits for a usage limit's reset
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    measure: InstanceMeasures = field(default_factory=InstanceMeasures)

    @property
    def name(self) -> str:
        return self.plan.name

    def measures(self) -> dict[str, Any]:
        """The ``measures`` object of the results and of ``instances.measures``."""
        acct = self.accountant
        return self.measure.as_dict(acct.message_tokens, acct.permission_denials)

    def worked_s(self, now: float | None = None) -> float:
        """Time it worked: its duration without barrier waits and pauses."""
        now = now or time.monotonic()
        return max(0.0, self.duration_s(now) - self.waiting_s(now) - self.pausing_s(now))

    @property
    def turns_done(self) -> int:
        """Turns of the plan completed, over every attempt."""
        return self.accountant.ok_results

    def duration_s(self, now: float | None = None) -> float:
        if self.started_mono is None:
            return 0.0
        end = self.ended_mono if self.ended_mono is not None else (now or time.monotonic())
        return max(0.0, end - self.started_mono)

    def waiting_s(self, now: float | None = None) -> float:
        extra = 0.0
        if self.waiting_since is not None:
            extra = (now or time.monotonic()) - self.waiting_since
        return self.wait_s + extra

    def pausing_s(self, now: float | None = None) -> float:
        """Time paused since it started (the current pause included), apart from any barrier
        wait in the same time: excluded from timeouts like waiting is."""
        if self.paused_since is None or self.started_mono is None:
            return self.paused_s
        now = self.ended_mono or now or time.monotonic()
        since = max(self.paused_since, self.started_mono)
        overlap = self.waiting_s(now) - self.paused_wait_mark
        return self.paused_s + max(0.0, now - since - overlap)

    def wait_text(self, now: float | None = None) -> str | None:
        """``waiting at 50%, 2/3 arrived, 12 s`` while at a barrier, else None."""
        if self.status is not Status.WAITING or self.wait_point is None:
            return None
        text = f"waiting at {point_label(self.wait_point)}"
        if self.wait_arrived is not None:
            text += f", {self.wait_arrived[0]}/{self.wait_arrived[1]} arrived"
        since = self.waiting_since
        return text + (f", {(now or time.monotonic()) - since:.0f} s" if since is not None else "")
