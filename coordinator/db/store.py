"""The store interface the run engine talks to, and the errors it raises.

Two implementations honour it: :class:`coordinator.db.postgres.PostgresStore` and
:class:`coordinator.db.memory.MemoryStore`; one contract test suite runs against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow, ProgressRow
from coordinator.errors import DatabaseError
from coordinator.pool.entries import PoolEntry


class DatabaseUnavailableError(DatabaseError):
    """The server cannot be reached or dropped the connection; retrying later may work."""


class OrchestrationExistsError(DatabaseError):
    """``create_orchestration`` with an id that is already stored."""


class OrchestrationNotFoundError(DatabaseError):
    """An operation named an orchestration id that is not stored."""


@runtime_checkable
class Store(Protocol):
    async def create_orchestration(self, row: OrchestrationRow) -> OrchestrationRow:
        """Insert ``row``; ``started_at`` is the server's clock. Returns the stored row.

        Raises OrchestrationExistsError if the id is taken.
        """
        ...

    async def finish_orchestration(
        self, orchestration_id: str, status: str, results: dict[str, object] | None
    ) -> OrchestrationRow:
        """Set the final status and results; ``ended_at`` is the server's clock.

        Raises OrchestrationNotFoundError for an unknown id.
        """
        ...

    async def reopen_orchestration(
        self, orchestration_id: str, host: str, lease_s: float
    ) -> OrchestrationRow | None:
        """Take a run over to resume it: it becomes ``running`` on ``host`` again (no
        ``ended_at``, a fresh heartbeat), atomically, unless a live coordinator owns it
        (running with an unexpired lease): then None and nothing changes. Raises
        OrchestrationNotFoundError for an unknown id."""
        ...

    async def heartbeat_orchestration(self, orchestration_id: str) -> None:
        """The coordinator running it is alive: ``last_seen_at`` becomes now. A run still
        ``running`` whose last heartbeat is older than its ``lease_s`` reads back as
        ``lost``; a finished run is left alone."""
        ...

    async def upsert_instances(self, rows: Sequence[InstanceRow]) -> None:
        """Write every snapshot in one round trip; each replaces the stored one."""
        ...

    async def add_checkpoints(self, rows: Sequence[CheckpointRow]) -> None:
        """Insert in one round trip; a milestone already stored is left as it is."""
        ...

    async def get_orchestration(self, orchestration_id: str) -> OrchestrationRow | None: ...

    async def list_orchestrations(self, limit: int = 20) -> list[OrchestrationRow]:
        """Newest first."""
        ...

    async def list_instances(self, orchestration_id: str) -> list[InstanceRow]:
        """Ordered by name."""
        ...

    async def list_checkpoints(
        self, orchestration_id: str, scenario_id: str | None = None
    ) -> list[CheckpointRow]:
        """Ordered by timestamp_unix, then scenario_id, then insertion."""
        ...

    async def latest_progress(self, orchestration_id: str) -> list[ProgressRow]:
        """The most recent checkpoint of each scenario, ordered by scenario_id."""
        ...

    async def latest_orchestration_id(self) -> str | None: ...

    async def add_pool_entries(self, entries: Sequence[PoolEntry]) -> None:
        """Insert pool entries in one round trip, in order (coordinator/pool/); one already
        stored (same orchestration, instance, time and seq) is left as it is."""
        ...

    async def list_pool_entries(
        self, orchestration_id: str, *, since: datetime | None = None, instance: str | None = None
    ) -> list[PoolEntry]:
        """Ordered by time, then insertion; ``since``: at or after it."""
        ...

    async def close(self) -> None: ...
