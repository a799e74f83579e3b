"""The fleet's rows: runners, claims and their epochs, and the fenced store a runner's
engine writes through (the same instance rows as a one-host run, but only while the row
still carries the epoch of this runner's claim)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from coordinator.db.journal import JournalEntry, write_journal
from coordinator.db.postgres import (
    PostgresStore,
    _instance,
    database_errors,
)
from coordinator.db.rows import InstanceRow, OrchestrationRow
from coordinator.engine.db_sink import DbSink
from coordinator.fleet.budgets import RunUse, Spent
from coordinator.fleet.queue import _sql
from coordinator.fleet.rows import FencedRows


@dataclass(frozen=True, slots=True)
class RunnerIdentity:
    id: uuid.UUID
    name: str
    host: str
    pid: int
    capacity: int
    labels: tuple[str, ...]
    lease_s: float


@dataclass(frozen=True, slots=True)
class RunnerRow:
    id: uuid.UUID
    name: str
    host: str
    pid: int
    capacity: int
    labels: tuple[str, ...]
    state: str
    lease_s: float
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    lost: bool
    held: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "capacity": self.capacity,
            "labels": list(self.labels),
            "state": "lost" if self.lost else self.state,
            "heartbeat_age_s": round(self.heartbeat_age_s, 1),
            "held": list(self.held),
        }


@dataclass(frozen=True, slots=True)
class Claim:
    row: InstanceRow
    epoch: int


class FleetDb:
    """Named statements of ``coordinator/fleet/queries.sql`` on the store's pool (or on one
    connection of its own: the lease's, on its thread)."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self.pool = pool

    async def register(self, me: RunnerIdentity) -> None:
        with database_errors("register runner"):
            await self.pool.execute(
                _sql("register_runner"),
                me.id,
                me.name,
                me.host,
                me.pid,
                me.capacity,
                list(me.labels),
                me.lease_s,
            )

    async def heartbeat(self, runner_id: uuid.UUID, state: str) -> None:
        with database_errors("runner heartbeat"):
            await self.pool.execute(_sql("heartbeat_runner"), runner_id, state)

    async def stop(self, runner_id: uuid.UUID) -> None:
        with database_errors("stop runner"):
            await self.pool.execute(_sql("stop_runner"), runner_id)

    async def claim(self, orchestration_id: str, name: str, runner_id: uuid.UUID) -> Claim | None:
        with database_errors("claim instance"):
            record = await self.pool.fetchrow(
                _sql("claim_instance"), orchestration_id, name, runner_id
            )
        if record is None:
            return None
        values = dict(record.items())
        epoch = int(values.pop("claim_epoch"))
        return Claim(_instance_from(values), epoch)

    async def epochs(self, held: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The current claim epoch of each (orchestration, instance); absent: no row."""
        if not held:
            return {}
        with database_errors("read claim epochs"):
            records = await self.pool.fetch(
                _sql("epochs_of"), [o for o, _ in held], [n for _, n in held]
            )
        return {(r["orchestration_id"], r["name"]): int(r["claim_epoch"]) for r in records}

    async def start_orchestration(self, orchestration_id: str) -> None:
        with database_errors("start orchestration"):
            await self.pool.execute(_sql("start_orchestration"), orchestration_id)

    async def finish_open(
        self, orchestration_id: str, status: str, results: dict[str, Any]
    ) -> bool:
        with database_errors("finish orchestration"):
            done = await self.pool.fetchval(
                _sql("finish_open_orchestration"), orchestration_id, status, results
            )
        return done is not None

    async def open_instances(self, orchestration_id: str, unfinished: Sequence[str]) -> int:
        """Instances not ended yet; -1 when the run is closed already (or unknown)."""
        with database_errors("count open instances"):
            record = await self.pool.fetchrow(
                _sql("open_instances"), orchestration_id, list(unfinished)
            )
        if record is None or not record["run_open"]:
            return -1
        return int(record["open"])

    async def mark_fleet(
        self, orchestration_id: str, kind: str, entrypoints: Sequence[str] = ()
    ) -> None:
        with database_errors("mark a fleet run"):
            await self.pool.execute(_sql("mark_fleet"), orchestration_id, kind, list(entrypoints))

    async def fleet_kind(self, orchestration_id: str) -> str | None:
        """'submitted', 'hosted', or None (a one-host run)."""
        with database_errors("read the run's kind"):
            kind = await self.pool.fetchval(_sql("fleet_kind"), orchestration_id)
        return str(kind) if kind is not None else None

    async def hosted_runs(self) -> dict[str, tuple[str, ...]]:
        """Open ``run --fleet`` runs and their own queues."""
        with database_errors("list hosted runs"):
            rows = await self.pool.fetch(_sql("hosted_runs"))
        return {r["id"]: tuple(r["fleet_entrypoints"]) for r in rows}

    async def live_runners(self) -> int:
        with database_errors("count live runners"):
            return int(await self.pool.fetchval(_sql("live_runners")))

    async def budget_use(
        self,
        orchestration_id: str,
        groups: tuple[Sequence[str], Sequence[str]],
        hosted: Sequence[str],
    ) -> RunUse:
        """The sums shared budgets need (``groups``: the names and commands a command
        budget covers, :func:`coordinator.fleet.budgets.command_groups`)."""
        names, commands = groups
        with database_errors("read budget use"):
            records = await self.pool.fetch(
                _sql("budget_use"), orchestration_id, list(names), list(commands), list(hosted)
            )
        overall = Spent()
        by_command: dict[str, Spent] = {}
        own: dict[str, Spent] = {}
        for r in records:
            spent = Spent(int(r["tokens"]), int(r["cache_read"]), float(r["cost_usd"]))
            if r["kind"] == "all":
                overall = spent
            elif r["kind"] == "command":
                by_command[r["key"]] = spent
            else:
                own[r["key"]] = spent
        return RunUse(overall, by_command, own)

    async def budget_alarm(self, channel: str, payload: str) -> None:
        with database_errors("announce a budget crossing"):
            await self.pool.execute(_sql("budget_alarm"), channel, payload)

    async def runners_of(self, orchestration_id: str) -> list[RunnerRow]:
        with database_errors("list runners"):
            records = await self.pool.fetch(_sql("runners_of"), orchestration_id)
        return [
            RunnerRow(
                **{
                    **dict(r.items()),
                    "id": uuid.UUID(str(r["id"])),
                    "labels": tuple(r["labels"]),
                    "held": tuple(r["held"]),
                }
            )
            for r in records
        ]


def _instance_from(values: dict[str, Any]) -> InstanceRow:
    return _instance(values)  # reads .items(), as of a record


class FencedStore(PostgresStore):
    """What one claimed instance's engine writes through: its instance rows only while they
    carry ``epoch`` (else they are dropped and ``on_fenced`` is told), in the runner's one
    statement for all its engines (:class:`FencedRows`); the orchestration is never
    finished by it (the fleet finishes a run once every instance ended)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        rows: FencedRows,
        orchestration_id: str,
        name: str,
        epoch: int,
        on_fenced: Callable[[], None],
    ) -> None:
        super().__init__(pool, owns_pool=False)
        self.rows = rows
        self.orchestration_id = orchestration_id
        self.name = name
        self.epoch = epoch
        self._on_fenced = on_fenced
        self.fenced = False

    async def heartbeat_orchestration(self, orchestration_id: str) -> None:
        await self.rows.beat_run(orchestration_id)  # once per runner, not per engine

    async def upsert_instances(self, rows: Sequence[InstanceRow]) -> None:
        mine = [r for r in rows if r.key == (self.orchestration_id, self.name)]
        if not mine or self.fenced:
            return
        if not await self.rows.write(mine[-1], self.epoch):
            self.fenced = True
            self._on_fenced()

    async def finish_orchestration(
        self, orchestration_id: str, status: str, results: dict[str, object] | None
    ) -> OrchestrationRow:
        row = await self.get_orchestration(orchestration_id)
        assert row is not None
        return row


class FleetSink(DbSink):
    """The engine's database sink, for one claimed instance: what the database did not
    take by the end is journalled like a one-host run's rows, but without the run's final
    status (one instance ending does not end the run; the fleet finishes it)."""

    def _journal(self, status: str, results: dict[str, Any]) -> None:
        assert self._orch is not None and isinstance(self.store, FencedStore)
        instances, checkpoints = self.writer.take_unwritten()
        # fenced by the claim's epoch when replayed: a take-over meanwhile drops them
        entry = JournalEntry(self._orch, instances, checkpoints, None, self.store.epoch)
        self.journalled = write_journal(self.state_dir, entry)
        self._note(
            f"database unreachable at the end: {entry.rows} row(s) journalled to "
            f"{self.journalled}; the next coordinator command that reaches the database "
            "writes them"
        )
