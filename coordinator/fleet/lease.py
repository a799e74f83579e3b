"""The runner's lease, renewed on a thread of its own: its own event loop and its own
Postgres connection, so that a runner whose event loop is busy with a hundred engines still
renews on time (renewed on that loop, a renewal waited for turns of it for more than 18 s at
100 instances per runner on 2 cores, and runners self-fenced with the database reachable).

Each renewal reads the claim epochs of what the runner holds (a runner back from a stop
sees the epochs moved and stops those copies first), then renews the jobs' and the
runner's heartbeats. The thread only decides and tells; the runner acts on its own loop:

- ``on_fenced(keys)``: another runner took these instances over;
- ``on_lapse(since)``: not renewed for :data:`SELF_FENCE_FRACTION` of the lease: stop
  every copy before another runner may take them over;
- ``on_frozen(seconds)``: the whole process was stopped (the thread itself overslept by
  that much): the guardian's watchdog reaped the copies meanwhile.

If the runner's loop is so starved that it has not acted on a lapse by
:data:`KILL_BY_FRACTION` of the lease, ``backstop()`` (the guardian reaps everything now)
makes sure no copy outlives the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog

from coordinator.db.postgres import CONNECT_TIMEOUT, database_errors
from coordinator.errors import DatabaseError
from coordinator.fleet.queue import heartbeat_jobs
from coordinator.fleet.rules import (
    KILL_BY_FRACTION,
    SELF_FENCE_FRACTION,
    fenced_out,
    must_self_fence,
)
from coordinator.fleet.store import FleetDb
from runner import aio

log = structlog.get_logger("coordinator.fleet.lease")

Key = tuple[str, str]  # (orchestration, instance)


@dataclass(frozen=True, slots=True)
class Hold:
    """One claimed instance the lease covers: its row's key, the epoch of this runner's
    claim and its pgqueuer job."""

    key: Key
    epoch: int
    job_id: int


class Renewal(Protocol):
    async def renew(self, holds: Sequence[Hold], state: str) -> set[Key]:
        """Renew; returns the keys another runner took over (their jobs are not renewed)."""
        ...

    def abandon(self) -> None:
        """A renewal hung (a cut link): drop its connection; the next one reconnects."""
        ...

    async def close(self) -> None: ...


class PgRenewal:
    """The renewal's three statements on one connection of its own, reopened on demand."""

    def __init__(self, dsn: str, runner_id: uuid.UUID) -> None:
        self.dsn = dsn
        self.runner_id = runner_id
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            with database_errors("connect for the lease"):
                self._conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
        return self._conn

    async def renew(self, holds: Sequence[Hold], state: str) -> set[Key]:
        conn = await self._connection()
        db = FleetDb(conn)
        epochs = await db.epochs([h.key for h in holds])
        fenced = {h.key for h in holds if fenced_out(h.epoch, epochs.get(h.key))}
        await heartbeat_jobs(conn, [h.job_id for h in holds if h.key not in fenced])
        await db.heartbeat(self.runner_id, state)
        return fenced

    def abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await aio.wait_for(conn.close(), 5.0)


class LeaseKeeper:
    """Renews every lease/4 on its thread; see the module's docstring for what it tells."""

    def __init__(
        self,
        renewal: Callable[[], Renewal],
        lease_s: float,
        *,
        holds: Callable[[], Sequence[Hold]],
        state: Callable[[], str],
        loop: asyncio.AbstractEventLoop,
        on_fenced: Callable[[set[Key]], None],
        on_lapse: Callable[[float], None],
        on_frozen: Callable[[float], None],
        backstop: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_renewal = renewal
        self.lease_s = lease_s
        self.interval = lease_s / 4  # a missed renewal or two still renew before the fence
        self._holds = holds
        self._state = state
        self._loop = loop  # the runner's: where it is told
        self._on_fenced = on_fenced
        self._on_lapse = on_lapse
        self._on_frozen = on_frozen
        self._backstop = backstop
        self.clock = clock
        self.renewed = clock()  # when the last good renewal began
        self.renewals = 0
        self._counted = threading.Condition()
        self._lapse_told = False  # told of this lapse (reset by the next good renewal)
        self._lapse_acted = threading.Event()  # ... and the runner acted on it
        self._backstopped = False
        self._thread: threading.Thread | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    # ------------------------------------------------------------------ runner's side
    def start(self) -> None:
        self.renewed = self.clock()
        self._thread = threading.Thread(target=self._main, name="runner-lease", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def since_renewed(self) -> float:
        return self.clock() - self.renewed

    def wait_renewals(self, count: int, timeout: float) -> bool:
        """Block until ``count`` good renewals were made (False: not within ``timeout``)."""
        with self._counted:
            return self._counted.wait_for(lambda: self.renewals >= count, timeout)

    def lapse_acted(self) -> None:
        """The runner stopped its copies for this lapse: no backstop needed."""
        self._lapse_acted.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """End the thread (its renewal in flight is given up on) and close its connection."""
        own, stop = self._own_loop, self._stop
        if own is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                own.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        try:
            asyncio.run(self._keep())
        except Exception as exc:  # never silently: the runner self-fences on its own then
            log.error("lease thread ended", error=repr(exc))

    def _tell(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the runner's loop is closed: it ended
            self._loop.call_soon_threadsafe(fn, *args)

    async def _keep(self) -> None:
        self._own_loop = asyncio.get_running_loop()
        self._stop = stop = asyncio.Event()
        self._started.set()
        renewal = self._make_renewal()
        stopping = asyncio.ensure_future(stop.wait())
        task: asyncio.Task[set[Key]] | None = None
        began = next_at = self.clock()
        try:
            while not stop.is_set():
                now = self.clock()
                if task is None and now >= next_at:
                    began = now
                    task = asyncio.ensure_future(renewal.renew(self._snapshot(), self._state()))
                wake = [began + self.interval if task is not None else next_at]
                if not self._lapse_told:
                    wake.append(self.renewed + self.lease_s * SELF_FENCE_FRACTION)
                elif not self._backstopped and not self._lapse_acted.is_set():
                    wake.append(self.renewed + self.lease_s * KILL_BY_FRACTION)
                timeout = max(0.0, min(wake) - now)
                waited = self.clock()
                await asyncio.wait({stopping, *([task] if task else [])}, timeout=timeout)
                frozen = self.clock() - waited - timeout  # overslept: the process was stopped
                if must_self_fence(frozen, self.lease_s):
                    self._tell(self._on_frozen, frozen)
                if task is not None and task.done():
                    self._renewed(task, began)
                    task, next_at = None, began + self.interval
                elif task is not None and self.clock() >= began + self.interval:
                    task.cancel()  # hung (a cut link): given up, its connection dropped
                    renewal.abandon()
                    log.info("lease renewal hung", seconds=round(self.clock() - began, 1))
                    task, next_at = None, self.clock()
                self._check_lapse()
        finally:
            stopping.cancel()
            if task is not None:
                task.cancel()
                renewal.abandon()
            await renewal.close()

    def _snapshot(self) -> Sequence[Hold]:
        for _ in range(5):  # the runner's dict may change size under the copy: copy again
            with contextlib.suppress(RuntimeError):
                return tuple(self._holds())
        return ()

    def _renewed(self, task: asyncio.Task[set[Key]], began: float) -> None:
        try:
            fenced = task.result()
        except DatabaseError as exc:
            log.info("lease renewal failed", error=str(exc))
            return
        except asyncio.CancelledError:
            return
        self.renewed = began
        with self._counted:
            self.renewals += 1
            self._counted.notify_all()
        if self._lapse_told:  # renewed again: a later lapse is a new one
            self._lapse_told = False
            self._lapse_acted.clear()
            self._backstopped = False
        if fenced:
            self._tell(self._on_fenced, fenced)

    def _check_lapse(self) -> None:
        since = self.since_renewed()
        if not self._lapse_told and must_self_fence(since, self.lease_s):
            self._lapse_told = True
            self._tell(self._on_lapse, since)
        elif (
            self._lapse_told
            and not self._lapse_acted.is_set()
            and not self._backstopped
            and since >= self.lease_s * KILL_BY_FRACTION
        ):
            self._backstopped = True
            log.warning("runner did not act on its lapsed lease: the guardian reaps now")
            if self._backstop is not None:
                self._backstop()
