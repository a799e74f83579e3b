"""The Postgres barrier: arrivals and releases are rows; NOTIFY only wakes waiters up.

One :class:`PostgresBarrier` per process and orchestration. It hosts any number of local
participants and keeps:

- a small pool for the transactions (arrive, leave, complete, decide);
- ONE dedicated LISTEN connection on channel ``coordinator_barrier``, whatever the number
  of local waiters; a notification wakes the local watcher of its point;
- one watcher task per point that has local waiters. It re-reads the database after every
  wake-up, and at least every ``poll_interval_s`` (and when the point's timeout is due)
  runs the decision itself, so a lost notification, a dropped listener or a crashed
  process that held the last arrival only delays a release, never blocks it. Every local
  waiter of that point shares the watcher's result (fan-out).

A release is decided in one transaction: lock the point row (an arrival's upsert, else
``SELECT ... FOR UPDATE``),
read participants, arrivals and who completed or left in a NEW statement (so, in READ
COMMITTED, it sees everything committed before the lock was granted), apply
:func:`coordinator.barrier.rules.decide` and insert the release row, whose trigger
NOTIFYs at commit. Elapsed time is measured by the server (``clock_timestamp()`` minus
the point's ``first_arrival_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import orjson

from coordinator.barrier.rules import (
    BarrierError,
    KeepWaiting,
    PointStatus,
    Release,
    WaitOutcome,
    decide,
    missing,
    point_sort_key,
)
from coordinator.db.listen import Listener
from coordinator.db.migrations import migrate
from coordinator.db.postgres import (
    create_pool,
    database_errors,
    is_transient,
    load_queries,
)
from coordinator.errors import DatabaseError
from runner import aio

CHANNEL = "coordinator_barrier"
T = TypeVar("T")

# The statements live in queries.sql next to this module (named, all parameterised).
QUERIES_FILE = Path(__file__).with_name("queries.sql")


def _sql(name: str) -> str:
    return load_queries(QUERIES_FILE)[name]


# ---------------------------------------------------------------------------- the barrier


@dataclass(eq=False, slots=True)
class _Watch:
    """The one watcher of a point in this process, shared by its local waiters."""

    done: asyncio.Future[Release | None]  # None: the barrier was closed
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0
    missing: tuple[str, ...] = ()
    error: str | None = None
    task: asyncio.Task[None] | None = None


class PostgresBarrier:
    """Use :meth:`open`; then ``register`` the participants this process hosts."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        orchestration_id: str,
        timeout_s: float,
        *,
        owns_pool: bool,
        poll_interval_s: float,
        listen: bool,
        host: str,
        lease_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.lease_s = lease_s
        self.orchestration_id = orchestration_id
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.host = host
        self._pool = pool
        self._owns_pool = owns_pool
        self._listen = listen
        self._listener = Listener(
            dsn,
            CHANNEL,
            self._on_notify,
            what="barrier releases",
            on_lost=self._wake_all,  # notifications in the gap are lost: everyone re-reads
            on_back=self._wake_all,
            retry_pause_s=poll_interval_s,  # at most one attempt per poll interval
        )
        self._watches: dict[str, _Watch] = {}
        self._released: dict[str, Release] = {}
        self._closed = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Local safety net: a wait never outlives the timeout by more than this, even with
        # the database unreachable (then the outcome is timed out and not recorded).
        self.grace_s = max(2.0, 3 * poll_interval_s)

    @classmethod
    async def open(
        cls,
        dsn: str,
        orchestration_id: str,
        *,
        mode: str,
        participants: Sequence[str],
        timeout_s: float,
        poll_interval_s: float = 1.0,
        listen: bool = True,
        pool: asyncpg.Pool | None = None,
        pool_size: int = 4,
        run_migrations: bool = True,
        host: str | None = None,
        lease_s: float = 30.0,
    ) -> PostgresBarrier:
        """Declare the orchestration's barrier (first writer wins), start listening.

        ``participants``: EVERY instance of the orchestration, also those other processes
        host; stored once, so a process that hosts only some of them still waits for all.
        ``timeout_s``, ``lease_s`` and ``mode`` are those of the first declaration; a
        different ``mode`` is refused with BarrierError. ``lease_s``: a participant whose
        process sent no heartbeat for this long (it crashed) leaves at the next decision.
        """
        if timeout_s <= 0 or poll_interval_s <= 0 or lease_s <= 0:
            raise ValueError("timeout_s, poll_interval_s and lease_s must be positive")
        owns_pool = pool is None
        if pool is None:
            pool = await create_pool(dsn, min_size=1, max_size=pool_size)
        try:
            with database_errors("open barrier"):
                async with pool.acquire() as conn:
                    if run_migrations:
                        await migrate(conn)
                    await conn.execute(
                        _sql("declare"),
                        orchestration_id,
                        mode,
                        list(participants),
                        timeout_s,
                        lease_s,
                    )
                    declared = await conn.fetchrow(_sql("get_declared"), orchestration_id)
            if declared["mode"] != mode:
                raise BarrierError(
                    f"orchestration {orchestration_id!r} was declared with sync mode "
                    f"{declared['mode']!r}, not {mode!r}",
                    declared=declared["mode"],
                    requested=mode,
                )
            barrier = cls(
                dsn,
                pool,
                orchestration_id,
                float(declared["timeout_s"]),
                owns_pool=owns_pool,
                poll_interval_s=poll_interval_s,
                listen=listen,
                host=host or f"{socket.gethostname()}:{os.getpid()}",
                lease_s=float(declared["lease_s"]),
            )
            if listen:
                await barrier._listener.connect()
        except BaseException:
            if owns_pool:
                await pool.close()
            raise
        return barrier

    # ------------------------------------------------------------------ the interface
    async def register(self, names: Sequence[str]) -> None:
        """The participants this process hosts (idempotent; an ended one stays ended).
        From now on this process sends a heartbeat for them every ``lease_s / 3``."""
        await self._with_conn(
            "register barrier participants",
            lambda conn: conn.execute(
                _sql("register"), self.orchestration_id, list(names), self.host
            ),
        )
        if self._heartbeat_task is None and not self._closed:
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="barrier:lease")

    async def rejoin(self, name: str, passed: Sequence[str]) -> bool:
        """``name`` (an instance this process holds by a claim: its first one or a take-over)
        joins as a live participant hosted here, whatever its previous holder left (left,
        active): the lease no longer excuses it, and only this host's arrivals and ends
        count for it from now on. ``passed``: the points it had passed, recorded as its
        arrivals. False when it had completed (it stays completed)."""
        orch = self.orchestration_id

        async def run(conn: asyncpg.Connection) -> tuple[bool, list[tuple[str, Release]]]:
            if await conn.fetchval(_sql("rejoin"), orch, name, self.host) is None:
                return False, []
            released: list[tuple[str, Release]] = []
            for point in passed:
                decision = await self._decide(conn, point, arriving=name)
                if isinstance(decision, Release):
                    released.append((point, decision))
            return True, released

        joined, released = await self._with_conn(f"rejoin {name}", run)
        for point, decision in released:
            self._resolve(point, decision)
        if self._heartbeat_task is None and not self._closed:
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="barrier:lease")
        return joined

    async def arrive(self, name: str, point: str) -> None:
        """Record that ``name`` reached ``point`` (idempotent) and release it if complete."""

        async def run(conn: asyncpg.Connection) -> Release | KeepWaiting | None:
            return await self._decide(conn, point, arriving=name)

        decision = await self._with_conn(f"arrive at {point}", run)
        if isinstance(decision, Release):
            self._resolve(point, decision)

    async def wait(self, name: str, point: str) -> WaitOutcome:
        """Until ``point`` is released (or times out). Call after :meth:`arrive`."""
        started = time.monotonic()
        known = self._released.get(point)
        if known is not None:
            return _outcome(known, 0.0)
        if self._closed:
            return WaitOutcome(False, False, [], 0.0, "barrier closed")
        watch = self._watches.get(point)
        if watch is None:
            watch = _Watch(done=asyncio.get_running_loop().create_future())
            self._watches[point] = watch
            watch.task = asyncio.create_task(self._watch(point, watch), name=f"barrier:{point}")
        watch.waiters += 1
        limit = self.timeout_s + self.grace_s
        try:
            result = await aio.wait_for(asyncio.shield(watch.done), limit)
        except TimeoutError:
            note = f"no decision from the database within {limit:g}s; continuing"
            if watch.error:
                note += f" ({watch.error})"
            return WaitOutcome(False, True, list(watch.missing), time.monotonic() - started, note)
        finally:
            watch.waiters -= 1
            if watch.waiters == 0 and self._watches.get(point) is watch:
                del self._watches[point]
                if watch.task is not None:
                    watch.task.cancel()
        waited = time.monotonic() - started
        if result is None:
            return WaitOutcome(False, False, list(watch.missing), waited, "barrier closed")
        return _outcome(result, waited)

    async def leave(self, name: str, reason: str) -> None:
        """``name`` failed, timed out, was blocked or cancelled: nobody waits for it."""
        await self._end(name, "left", reason)

    async def complete(self, name: str) -> None:
        """``name`` finished: it has passed every barrier point."""
        await self._end(name, "completed", None)

    async def points(self) -> list[PointStatus]:
        orch = self.orchestration_id
        return await self._with_conn("read barrier points", lambda conn: read_points(conn, orch))

    async def close(self) -> None:
        """Stop watching and listening; pending waits return "barrier closed"."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        for watch in list(self._watches.values()):
            if not watch.done.done():
                watch.done.set_result(None)
            if watch.task is not None:
                watch.task.cancel()
        self._watches.clear()
        await self._listener.close()
        if self._owns_pool:
            await self._pool.close()

    # ------------------------------------------------------------------ decisions
    async def _decide(
        self, conn: asyncpg.Connection, point: str, *, arriving: str | None
    ) -> Release | KeepWaiting | None:
        """One transaction: lock the point, read, decide, maybe insert the release.

        None when the point does not exist yet (nobody arrived)."""
        orch = self.orchestration_id
        async with conn.transaction():
            lock = _sql("lock_point") if arriving is None else _sql("create_and_lock_point")
            if not await conn.fetchval(lock, orch, point):
                return None
            # A process that decides is alive: its own beat first, so that after a long
            # outage (no heartbeats got through) it does not expire its own participants.
            await conn.execute(_sql("heartbeat"), orch, self.host)
            await conn.execute(_sql("expire"), orch)  # crashed processes' participants leave
            row = await conn.fetchrow(_sql("point_state"), orch, point, arriving, self.host)
            if row["released"]:
                return Release(timed_out=row["timed_out"], missing=tuple(row["missing"]))
            arrived = set(row["arrived"])
            if arriving is not None and not row["arrival_fenced"]:  # not: another holds it
                arrived.add(arriving)
            decision = decide(
                row["participants"],
                arrived,
                set(row["excused"]),
                row["elapsed_s"],
                row["timeout_s"],
            )
            if isinstance(decision, Release):
                await conn.execute(
                    _sql("insert_release"), orch, point, decision.timed_out, list(decision.missing)
                )
            return decision

    async def _check(self, point: str) -> Release | KeepWaiting | None:
        """A released point costs one lock-free read; otherwise decide (timeouts too)."""

        async def run(conn: asyncpg.Connection) -> Release | KeepWaiting | None:
            row = await conn.fetchrow(_sql("get_release"), self.orchestration_id, point)
            if row is not None:
                return Release(timed_out=row["timed_out"], missing=tuple(row["missing"]))
            return await self._decide(conn, point, arriving=None)

        with database_errors(f"check {point}"):
            async with self._pool.acquire() as conn:
                return await run(conn)

    async def _end(self, name: str, state: str, reason: str | None) -> None:
        async def run(conn: asyncpg.Connection) -> list[tuple[str, Release]]:
            orch = self.orchestration_id
            await conn.execute(_sql("end"), orch, name, state, reason, self.host)
            released: list[tuple[str, Release]] = []
            for row in await conn.fetch(_sql("open_points"), orch):
                decision = await self._decide(conn, row["point"], arriving=None)
                if isinstance(decision, Release):
                    released.append((row["point"], decision))
            return released

        for point, decision in await self._with_conn(f"{state}: {name}", run):
            self._resolve(point, decision)

    def _resolve(self, point: str, decision: Release) -> None:
        """A release this process saw: local waiters go at once, without the NOTIFY trip."""
        self._released[point] = decision
        watch = self._watches.get(point)
        if watch is not None and not watch.done.done():
            watch.done.set_result(decision)

    async def _with_conn(
        self, operation: str, run: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """``run`` on a pooled connection; transient failures are retried for ~2 s."""
        delays = (0.1, 0.3, 0.6, 1.0)
        for attempt in range(len(delays) + 1):
            try:
                with database_errors(operation):
                    async with self._pool.acquire() as conn:
                        return await run(conn)
            except DatabaseError as exc:
                if attempt == len(delays) or not is_transient(exc) or self._closed:
                    raise
                await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ liveness
    async def _heartbeat(self) -> None:
        """Keep this process's participants' lease fresh. A missed beat (the database
        away for a moment) is only a delay; the lease is three beats long."""
        while not self._closed:
            await asyncio.sleep(self.lease_s / 3)
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(_sql("heartbeat"), self.orchestration_id, self.host)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                continue

    # ------------------------------------------------------------------ watching
    async def _watch(self, point: str, watch: _Watch) -> None:
        while not watch.done.done():
            watch.wake.clear()  # before reading: a notification during the read re-wakes
            delay = self.poll_interval_s
            try:
                decision = await self._check(point)
                watch.error = None
            except DatabaseError as exc:
                decision, watch.error = None, str(exc)
            if isinstance(decision, Release):
                self._resolve(point, decision)
                return
            if isinstance(decision, KeepWaiting):
                watch.missing = decision.missing
                # Be there when the timeout is due (server time), not up to a poll later.
                delay = min(delay, decision.remaining_s + 0.005)
            self._ensure_listener()
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(watch.wake.wait(), delay)

    # ------------------------------------------------------------------ listening
    def _on_notify(self, payload: str) -> None:
        try:
            message = orjson.loads(payload)
            orch, point = message["o"], message["p"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if orch != self.orchestration_id:
            return
        watch = self._watches.get(point)
        if watch is not None:
            watch.wake.set()

    def _wake_all(self) -> None:
        for watch in self._watches.values():
            watch.wake.set()

    def _ensure_listener(self) -> None:
        """Reconnect the listener in the background if it is gone (the watchers call this
        on every round; at most one attempt per poll interval)."""
        if self._listen and not self._closed:
            self._listener.ensure()


async def read_points(conn: asyncpg.Connection, orchestration_id: str) -> list[PointStatus]:
    """Every point of an orchestration's barrier, in order (also for ``coordinator status``
    in another process: it needs no barrier object, only a connection)."""
    people = await conn.fetchrow(_sql("participants"), orchestration_id)
    rows = await conn.fetch(_sql("points"), orchestration_id)
    everyone = people["participants"] if people else []
    excused = set(people["excused"]) if people else set()
    found = [
        PointStatus(
            point=row["point"],
            arrived=list(row["arrived"]),
            first_arrival_at=row["first_arrival_at"],
            released_at=row["released_at"],
            timed_out=row["timed_out"],
            missing=(
                list(row["missing"])
                if row["released_at"] is not None
                else list(missing(everyone, set(row["arrived"]), excused))
            ),
        )
        for row in rows
    ]
    found.sort(key=lambda p: point_sort_key(p.point))
    return found


def _outcome(decision: Release, waited_s: float) -> WaitOutcome:
    return WaitOutcome(
        released=not decision.timed_out,
        timed_out=decision.timed_out,
        missing=list(decision.missing),
        waited_s=waited_s,
    )
