"""An in-memory Store for unit tests and ``--no-database`` runs.

It follows the same contract as PostgresStore (the contract suite runs against both):
the same ordering, idempotent checkpoints, snapshot semantics for instances, and its
own clock standing in for the server's ``now()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow, ProgressRow
from coordinator.db.store import OrchestrationExistsError, OrchestrationNotFoundError
from coordinator.errors import DatabaseError
from coordinator.pool.entries import PoolEntry


class MemoryStore:
    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._last_now: datetime | None = None
        self._orchestrations: dict[str, OrchestrationRow] = {}
        self._instances: dict[tuple[str, str], InstanceRow] = {}
        # Insertion order stands in for the identity column that breaks ties.
        self._checkpoints: dict[tuple[str, str, str], CheckpointRow] = {}
        self._pool: list[PoolEntry] = []

    def _now(self) -> datetime:
        # Strictly increasing, like distinct transactions' now() in practice.
        now = self._clock()
        if self._last_now is not None and now <= self._last_now:
            now = self._last_now + timedelta(microseconds=1)
        self._last_now = now
        return now

    def _require(self, orchestration_id: str) -> None:
        if orchestration_id not in self._orchestrations:
            # What the foreign key reports in Postgres.
            raise DatabaseError(f"no orchestration {orchestration_id!r}")

    async def create_orchestration(self, row: OrchestrationRow) -> OrchestrationRow:
        if row.id in self._orchestrations:
            raise OrchestrationExistsError(
                f"orchestration {row.id!r} already exists", orchestration_id=row.id
            )
        now = self._now()
        stored = dataclasses.replace(
            row, started_at=now, ended_at=None, updated_at=now, last_seen_at=now
        )
        self._orchestrations[row.id] = stored
        return stored

    async def heartbeat_orchestration(self, orchestration_id: str) -> None:
        current = self._orchestrations.get(orchestration_id)
        if current is not None and current.status == "running":
            self._orchestrations[orchestration_id] = dataclasses.replace(
                current, last_seen_at=self._now()
            )

    async def reopen_orchestration(
        self, orchestration_id: str, host: str, lease_s: float
    ) -> OrchestrationRow | None:
        current = self._orchestrations.get(orchestration_id)
        if current is None:
            raise OrchestrationNotFoundError(
                f"no orchestration {orchestration_id!r}", orchestration_id=orchestration_id
            )
        if current.status == "running" and self._seen(current).status == "running":
            return None  # a live coordinator owns it
        now = self._now()
        stored = dataclasses.replace(
            current,
            status="running",
            host=host,
            lease_s=lease_s,
            ended_at=None,
            updated_at=now,
            last_seen_at=now,
        )
        self._orchestrations[orchestration_id] = stored
        return stored

    def _seen(self, row: OrchestrationRow) -> OrchestrationRow:
        """What the ``orchestrations_seen`` view shows: a silent running run is lost."""
        seen = row.last_seen_at
        expired = seen is not None and seen < self._clock() - timedelta(seconds=row.lease_s)
        return (
            dataclasses.replace(row, status="lost") if row.status == "running" and expired else row
        )

    async def finish_orchestration(
        self, orchestration_id: str, status: str, results: dict[str, object] | None
    ) -> OrchestrationRow:
        current = self._orchestrations.get(orchestration_id)
        if current is None:
            raise OrchestrationNotFoundError(
                f"no orchestration {orchestration_id!r}", orchestration_id=orchestration_id
            )
        now = self._now()
        stored = dataclasses.replace(
            current, status=status, results=results, ended_at=now, updated_at=now
        )
        self._orchestrations[orchestration_id] = stored
        return stored

    async def upsert_instances(self, rows: Sequence[InstanceRow]) -> None:
        for row in rows:
            self._require(row.orchestration_id)
        now = self._now()
        for row in rows:
            self._instances[row.key] = dataclasses.replace(row, updated_at=now)

    async def add_checkpoints(self, rows: Sequence[CheckpointRow]) -> None:
        for row in rows:
            self._require(row.orchestration_id)
            if not 0 <= row.progress_pct <= 100:
                raise DatabaseError(f"progress_pct {row.progress_pct} is outside 0..100")
        now = self._now()
        for row in rows:
            if row.key not in self._checkpoints:
                self._checkpoints[row.key] = dataclasses.replace(row, created_at=now)

    async def get_orchestration(self, orchestration_id: str) -> OrchestrationRow | None:
        row = self._orchestrations.get(orchestration_id)
        return None if row is None else self._seen(row)

    async def list_orchestrations(self, limit: int = 20) -> list[OrchestrationRow]:
        rows = sorted(
            self._orchestrations.values(), key=lambda r: (r.started_at, r.id), reverse=True
        )
        return [self._seen(r) for r in rows[:limit]]

    async def list_instances(self, orchestration_id: str) -> list[InstanceRow]:
        rows = [r for r in self._instances.values() if r.orchestration_id == orchestration_id]
        return sorted(rows, key=lambda r: r.name)

    async def list_checkpoints(
        self, orchestration_id: str, scenario_id: str | None = None
    ) -> list[CheckpointRow]:
        rows = [
            r
            for r in self._checkpoints.values()
            if r.orchestration_id == orchestration_id
            and (scenario_id is None or r.scenario_id == scenario_id)
        ]
        # sorted() is stable: insertion order breaks the remaining ties.
        return sorted(rows, key=lambda r: (r.timestamp_unix, r.scenario_id))

    async def latest_progress(self, orchestration_id: str) -> list[ProgressRow]:
        latest: dict[str, CheckpointRow] = {}
        for row in self._checkpoints.values():  # insertion order
            if row.orchestration_id != orchestration_id:
                continue
            seen = latest.get(row.scenario_id)
            if seen is None or row.timestamp_unix >= seen.timestamp_unix:
                latest[row.scenario_id] = row
        return [
            ProgressRow(
                orchestration_id=r.orchestration_id,
                scenario_id=r.scenario_id,
                milestone_name=r.milestone_name,
                progress_pct=r.progress_pct,
                timestamp_unix=r.timestamp_unix,
                metrics=r.metrics,
                created_at=r.created_at,
            )
            for _, r in sorted(latest.items())
        ]

    async def latest_orchestration_id(self) -> str | None:
        newest = await self.list_orchestrations(limit=1)
        return newest[0].id if newest else None

    async def add_pool_entries(self, entries: Sequence[PoolEntry]) -> None:
        for entry in entries:
            self._require(entry.orchestration_id)
        stored = {(e.orchestration_id, e.instance, e.at_unix, e.seq) for e in self._pool}
        for entry in entries:
            key = (entry.orchestration_id, entry.instance, entry.at_unix, entry.seq)
            if key not in stored:  # written twice: stored once, as in Postgres
                stored.add(key)
                self._pool.append(entry)

    async def list_pool_entries(
        self, orchestration_id: str, *, since: datetime | None = None, instance: str | None = None
    ) -> list[PoolEntry]:
        after = since.timestamp() if since is not None else None
        rows = [
            e
            for e in self._pool
            if e.orchestration_id == orchestration_id
            and (after is None or e.at_unix >= after)
            and (instance is None or e.instance == instance)
        ]
        return sorted(rows, key=lambda e: e.at_unix)  # stable: insertion breaks ties

    async def close(self) -> None:
        return None
