"""The queue of instances, behind an interface of ours: enqueue, claim, heartbeat, done,
hand back, cancel. :class:`PgQueue` is pgqueuer (its tables, its claim with ``FOR UPDATE
SKIP LOCKED``, its per-job heartbeat and stale re-claim, its scheduled ``execute_after``);
:class:`MemoryQueue` is the in-memory twin the contract tests run against too.

pgqueuer's schema is pgqueuer's: it is installed (or upgraded to the installed pgqueuer)
through its own installer, under an advisory lock of ours so that two hosts starting at once
do not race, and only after our migrations (``sql/``) ran. Neither side refers to the
other's tables, so each evolves on its own and both are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import structlog

from coordinator.db.postgres import database_errors, load_queries
from coordinator.fleet.rules import JobPayload
from runner import aio

log = structlog.get_logger("coordinator.fleet.queue")

QUERIES = Path(__file__).with_name("queries.sql")


def _sql(name: str) -> str:
    return load_queries(QUERIES)[name]


@dataclass(frozen=True, slots=True)
class QueuedJob:
    entrypoint: str
    payload: JobPayload
    not_before_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    entrypoint: str
    payload: JobPayload | None
    raw: Any = field(default=None, compare=False, repr=False)  # the adapter's own row


class Queue(Protocol):
    async def enqueue(self, jobs: Sequence[QueuedJob]) -> list[int]: ...
    async def claim(
        self,
        entrypoints: Sequence[str],
        owner: uuid.UUID,
        capacity: int,
        lease_s: float,
        batch: int | None = None,
    ) -> list[ClaimedJob]:
        """Up to ``capacity`` jobs in all held by ``owner`` (and at most ``batch`` now: the
        slots its holder has free, some of which may still finish jobs already done):
        queued ones whose not-before time passed, and picked ones whose heartbeat is older
        than ``lease_s`` (their runner is gone)."""
        ...

    async def heartbeat(self, jobs: Sequence[ClaimedJob]) -> None: ...
    async def done(self, jobs: Sequence[ClaimedJob]) -> None: ...
    async def hand_back(self, jobs: Sequence[ClaimedJob], delay_s: float = 0.0) -> None:
        """Queued again (after ``delay_s``), for any runner (a drain's second signal)."""
        ...

    async def wait_for_work(self, timeout_s: float) -> None:
        """Until something may be claimable (a hint) or ``timeout_s``."""
        ...

    async def close(self) -> None: ...


async def install_queue(dsn: str) -> None:
    """pgqueuer's schema in this database: installed when absent, upgraded to this
    pgqueuer when present (a no-op when current). One connection, under our lock."""
    from pgqueuer.queries import Queries

    with database_errors("install the queue (pgqueuer)"):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(_sql("lock_queue_install"))
            try:
                queries = Queries.from_asyncpg_connection(conn)
                if not await queries.schema_is_installed():
                    await queries.install()
                else:
                    await queries.apply_upgrade()
            finally:
                await conn.execute(_sql("unlock_queue_install"))
        finally:
            await conn.close()


class PgQueue:
    """pgqueuer's ``Queries`` on a pool of its own (pgqueuer's codecs, not the store's)."""

    def __init__(self, pool: asyncpg.Pool, listener: asyncpg.Connection | None) -> None:
        from pgqueuer.queries import Queries

        self._pool = pool
        self._queries = Queries.from_asyncpg_pool(pool)
        self._listener = listener
        self._wake = asyncio.Event()

    @classmethod
    async def open(cls, dsn: str, *, listen: bool = True, max_size: int = 2) -> PgQueue:
        from pgqueuer.domain.settings import DBSettings

        with database_errors("open the queue"):
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
            listener = None
            try:
                if listen:
                    listener = await asyncpg.connect(dsn)
                    queue = cls(pool, listener)
                    await listener.add_listener(DBSettings().channel, queue._notified)
                    return queue
            except BaseException:
                if listener is not None:
                    await listener.close()
                await pool.close()
                raise
        return cls(pool, None)

    def _notified(self, *_args: object) -> None:
        self._wake.set()  # only a hint: the runner claims again, which reads the truth

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> list[int]:
        if not jobs:
            return []
        with database_errors("enqueue instances"):
            ids = await self._queries.enqueue(
                [j.entrypoint for j in jobs],
                [j.payload.encode() for j in jobs],
                [0] * len(jobs),
                [timedelta(seconds=j.not_before_s) for j in jobs],
            )
        return [int(i) for i in ids]

    async def claim(
        self,
        entrypoints: Sequence[str],
        owner: uuid.UUID,
        capacity: int,
        lease_s: float,
        batch: int | None = None,
    ) -> list[ClaimedJob]:
        from pgqueuer.ports.repository import EntrypointExecutionParameter
        from pgqueuer.types import QueueEntrypoint, QueueManagerId

        with database_errors("claim instances"):
            jobs = await self._queries.dequeue(
                batch_size=max(1, capacity if batch is None else min(batch, capacity)),
                entrypoints={
                    QueueEntrypoint(e): EntrypointExecutionParameter(concurrency_limit=0)
                    for e in entrypoints
                },
                queue_manager_id=QueueManagerId(owner),
                global_concurrency_limit=capacity,
                heartbeat_timeout=timedelta(seconds=lease_s),
            )
        return [
            ClaimedJob(int(j.id), str(j.entrypoint), JobPayload.decode(j.payload), j) for j in jobs
        ]

    async def heartbeat(self, jobs: Sequence[ClaimedJob]) -> None:
        if jobs:
            with database_errors("heartbeat jobs"):
                await self._queries.update_heartbeat([j.raw.id for j in jobs])

    async def done(self, jobs: Sequence[ClaimedJob]) -> None:
        if jobs:
            with database_errors("finish jobs"):
                await self._queries.log_jobs([(j.raw, "successful", None) for j in jobs])

    async def hand_back(self, jobs: Sequence[ClaimedJob], delay_s: float = 0.0) -> None:
        with database_errors("hand jobs back"):
            for job in jobs:
                await self._queries.retry_job(job.raw, timedelta(seconds=delay_s), None)

    async def wait_for_work(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await aio.wait_for(self._listener.close(), 5.0)
        with contextlib.suppress(Exception):
            await aio.wait_for(self._pool.close(), 5.0)


async def heartbeat_jobs(conn: asyncpg.Connection, job_ids: Sequence[int]) -> None:
    """pgqueuer's heartbeat of ``job_ids`` on a connection of the caller's (the lease's
    own, on its own thread), not on the queue's pool."""
    from pgqueuer.queries import Queries
    from pgqueuer.types import JobId

    if job_ids:
        with database_errors("heartbeat jobs"):
            await Queries.from_asyncpg_connection(conn).update_heartbeat(
                [JobId(i) for i in job_ids]
            )


@dataclass
class _MemJob:
    id: int
    entrypoint: str
    payload: JobPayload
    execute_after: float
    owner: uuid.UUID | None = None
    heartbeat: float = 0.0
    state: str = "queued"  # queued | picked


class MemoryQueue:
    """The same contract in memory (one process), on a clock the tests may move."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._jobs: dict[int, _MemJob] = {}
        self._next = 1
        self._wake = asyncio.Event()

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> list[int]:
        ids = []
        for job in jobs:
            ids.append(self._next)
            self._jobs[self._next] = _MemJob(
                self._next, job.entrypoint, job.payload, self._clock() + job.not_before_s
            )
            self._next += 1
        self._wake.set()
        return ids

    async def claim(
        self,
        entrypoints: Sequence[str],
        owner: uuid.UUID,
        capacity: int,
        lease_s: float,
        batch: int | None = None,
    ) -> list[ClaimedJob]:
        now = self._clock()
        held = sum(1 for j in self._jobs.values() if j.state == "picked" and j.owner == owner)
        out: list[ClaimedJob] = []
        for job in sorted(self._jobs.values(), key=lambda j: j.id):
            if held + len(out) >= capacity or (batch is not None and len(out) >= max(1, batch)):
                break
            if job.entrypoint not in entrypoints or job.execute_after > now:
                continue
            stale = job.state == "picked" and job.heartbeat < now - lease_s
            if job.state == "queued" or stale:
                job.state, job.owner, job.heartbeat = "picked", owner, now
                out.append(ClaimedJob(job.id, job.entrypoint, job.payload, job))
        return out

    async def heartbeat(self, jobs: Sequence[ClaimedJob]) -> None:
        for claimed in jobs:
            if claimed.id in self._jobs:
                self._jobs[claimed.id].heartbeat = self._clock()

    async def done(self, jobs: Sequence[ClaimedJob]) -> None:
        for claimed in jobs:
            self._jobs.pop(claimed.id, None)

    async def hand_back(self, jobs: Sequence[ClaimedJob], delay_s: float = 0.0) -> None:
        for claimed in jobs:
            job = self._jobs.get(claimed.id)
            if job is not None:
                job.state, job.owner = "queued", None
                job.execute_after = self._clock() + delay_s
        self._wake.set()

    async def wait_for_work(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()

    async def close(self) -> None:
        return None

    def pending(self) -> int:
        return len(self._jobs)
