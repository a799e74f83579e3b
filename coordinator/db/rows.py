"""The rows the store writes and reads: plain frozen dataclasses, no I/O.

Fields the database fills itself (``started_at`` of an orchestration, every ``updated_at``
and ``created_at``) are ``None`` on rows the caller builds and are ignored on write; rows
read back carry the server's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrchestrationRow:
    id: str
    status: str
    host: str
    sync_mode: str
    config: JsonObject = field(default_factory=dict)
    budgets: JsonObject = field(default_factory=dict)
    results: JsonObject | None = None
    # How long the coordinator running it may go without a heartbeat before the run is
    # shown as ``lost`` (read back: status ``lost`` when it did, see ``last_seen_at``).
    lease_s: float = 30.0
    # How it was launched (config path, cwd, flags, results path): what a resume needs.
    launch: JsonObject = field(default_factory=dict)
    # Server clock; filled by the store.
    started_at: datetime | None = None
    ended_at: datetime | None = None
    updated_at: datetime | None = None
    last_seen_at: datetime | None = None  # the coordinator's last heartbeat


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """A full snapshot of one instance; writing it replaces the previous snapshot."""

    orchestration_id: str
    name: str
    status: str
    session_id: str | None = None  # a UUID string, as the claude CLI reports it
    pid: int | None = None
    host: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    tool_calls: dict[str, int] = field(default_factory=dict)
    turns: int = 0
    progress_pct: float | None = None
    exit_code: int | None = None
    error: str | None = None
    reason: str | None = None
    wait_s: float = 0.0  # at barriers; part of the duration, not of the working time
    attempts: int = 0  # processes launched for it so far
    carry: JsonObject = field(default_factory=dict)  # what a resume continues from
    # quality, memory, time budget, tools, series (coordinator/measure/; the results' object)
    measures: JsonObject = field(default_factory=dict)
    # Event times measured by the caller (writes are batched, so now() would be late).
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # Server clock; filled by the store.
    updated_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.orchestration_id, self.name)


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One milestone reached by one scenario (instance); written at most once."""

    orchestration_id: str
    scenario_id: str
    milestone_name: str
    progress_pct: float
    timestamp_unix: int  # epoch milliseconds when the milestone was reached (caller's clock)
    state_snapshot: JsonObject = field(default_factory=dict)
    metrics: JsonObject = field(default_factory=dict)
    # Server clock; filled by the store.
    created_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.orchestration_id, self.scenario_id, self.milestone_name)


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """The latest checkpoint of one scenario (a row of the ``scenario_latest_progress`` view)."""

    orchestration_id: str
    scenario_id: str
    milestone_name: str
    progress_pct: float
    timestamp_unix: int
    metrics: JsonObject
    created_at: datetime | None = None
