"""Live state of one instance as the engine, the status report and the results see it."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from coordinator.plan import PlannedInstance
from runner.accounting import Accountant
from runner.progress import MilestoneTracker, ProgressTracker


class Status(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"  # at a barrier
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
    wait_s: float = 0.0
    waiting_since: float | None = None
    wait_note: str | None = None
    turns_sent: int = 0
    lines: int = 0
    bytes: int = 0
    skipped_lines: int = 0
    init_version: str | None = None
    milestone_hits: list[MilestoneHit] = field(default_factory=list)
    budget_notes: list[str] = field(default_factory=list)
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def name(self) -> str:
        return self.plan.name

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
