"""BatchedWriter: the run engine's hot path hands rows over without waiting for Postgres.

``submit_instance`` / ``submit_checkpoint`` only enqueue (no await, no I/O, never raise).
Instance snapshots are coalesced by (orchestration_id, name): only the newest snapshot of
each instance is written. A background task writes a batch when ``max_batch`` rows are
waiting or the oldest waiting row is ``max_latency`` seconds old, whichever comes first.

When the database goes away, rows stay buffered (instances: one per instance;
checkpoints: a list, with a warning each time it doubles past ``warn_pending``), the
writer retries with exponential backoff, and writes them once the server is back.
Retrying is safe because both writes are idempotent (snapshot upsert, ON CONFLICT DO
NOTHING). A row the database refuses for itself (a constraint violation, data that
cannot be encoded) is isolated from its batch, logged, counted as ``dropped`` and
skipped, so one bad row cannot block the rest forever.

Not thread-safe: call everything from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Generic, Protocol, TypeVar

import structlog

from coordinator.db.postgres import is_transient
from coordinator.db.rows import CheckpointRow, InstanceRow
from coordinator.db.store import Store
from runner import aio

_log = structlog.get_logger("coordinator.db.writer")

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of the writer's counters, for the status line."""

    written_instances: int
    written_checkpoints: int
    pending_instances: int
    pending_checkpoints: int
    failures: int  # write attempts that failed (transient or not)
    reconnects: int  # recoveries: a successful write after failed ones
    dropped: int  # rows refused by the database itself, skipped after isolation
    last_error: str | None
    healthy: bool  # False between a failed write and the next successful one

    @property
    def written(self) -> int:
        return self.written_instances + self.written_checkpoints

    @property
    def pending(self) -> int:
        return self.pending_instances + self.pending_checkpoints


class _Keyed(Protocol):
    @property
    def key(self) -> Hashable: ...


K = TypeVar("K", bound=_Keyed)
_Entry = tuple[R, int]  # a row and its submission sequence number


class _FifoQueue(Generic[R]):
    """Every row, in submission order."""

    def __init__(self) -> None:
        self._items: deque[_Entry[R]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, row: R, seq: int) -> None:
        self._items.append((row, seq))

    def take(self, n: int) -> list[_Entry[R]]:
        return [self._items.popleft() for _ in range(min(n, len(self._items)))]

    def put_back(self, entries: Sequence[_Entry[R]]) -> None:
        self._items.extendleft(reversed(entries))

    def low_seq(self) -> int | None:
        return self._items[0][1] if self._items else None


class _CoalescingQueue(Generic[K]):
    """The newest row per key; the dict stays in sequence order (a replaced key moves last)."""

    def __init__(self) -> None:
        self._items: dict[Hashable, _Entry[K]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, row: K, seq: int) -> None:
        self._items.pop(row.key, None)
        self._items[row.key] = (row, seq)

    def take(self, n: int) -> list[_Entry[K]]:
        keys = list(islice(self._items, n))
        return [self._items.pop(key) for key in keys]

    def put_back(self, entries: Sequence[_Entry[K]]) -> None:
        # A snapshot submitted while these were in flight supersedes them.
        newer = self._items
        self._items = {row.key: (row, seq) for row, seq in entries if row.key not in newer}
        self._items.update(newer)

    def low_seq(self) -> int | None:
        return next(iter(self._items.values()))[1] if self._items else None


class _Outcome(enum.Enum):
    OK = "ok"
    TRANSIENT = "transient"
    REFUSED = "refused"


class BatchedWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 500,
        max_latency: float = 0.2,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        write_timeout: float = 30.0,
        warn_pending: int = 50_000,
        on_health: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_latency < 0:
            raise ValueError("max_batch must be >= 1 and max_latency >= 0")
        self._store = store
        self._max_batch = max_batch
        self._max_latency = max_latency
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._write_timeout = write_timeout
        self._warn_pending = warn_pending
        self._next_warn = warn_pending
        self._on_health = on_health  # (healthy, error): called when the database goes/returns

        self._instances: _CoalescingQueue[InstanceRow] = _CoalescingQueue()
        self._checkpoints: _FifoQueue[CheckpointRow] = _FifoQueue()
        self._seq = 0
        self._inflight_low: int | None = None
        self._oldest_at = 0.0  # time.monotonic() when the buffer last became non-empty

        self._wake = asyncio.Event()  # there is something to write
        self._kick = asyncio.Event()  # write now: batch full, flush or close waiting
        self._progress = asyncio.Condition()  # notified after every write attempt
        self._flushers = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

        self._written_instances = 0
        self._written_checkpoints = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._reconnects = 0
        self._dropped = 0
        self._last_error: str | None = None

    # -- hot path ---------------------------------------------------------------------

    def submit_instance(self, row: InstanceRow) -> None:
        """Enqueue a snapshot; it replaces any unwritten snapshot of the same instance."""
        if self._refuse_after_close(row):
            return
        self._note_arrival()
        self._instances.add(row, self._seq)
        if len(self._instances) >= self._max_batch:
            self._kick.set()

    def submit_checkpoint(self, row: CheckpointRow) -> None:
        """Enqueue a checkpoint; every one is written (a repeated milestone is a no-op)."""
        if self._refuse_after_close(row):
            return
        self._note_arrival()
        self._checkpoints.add(row, self._seq)
        pending = len(self._checkpoints)
        if pending >= self._max_batch:
            self._kick.set()
        if pending >= self._next_warn:
            self._next_warn *= 2
            _log.warning(
                "database writes are backing up",
                pending_checkpoints=pending,
                last_error=self._last_error,
            )

    def _note_arrival(self) -> None:
        self._seq += 1
        if not self._instances and not self._checkpoints:
            self._oldest_at = time.monotonic()
        self._wake.set()

    def _refuse_after_close(self, row: object) -> bool:
        if not self._closing:
            return False
        self._dropped += 1
        _log.error("row submitted after the writer was closed; not written", row=repr(row))
        return True

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (needs a running event loop). Idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="coordinator-db-writer"
            )

    async def __aenter__(self) -> BatchedWriter:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row submitted before this call is written (or superseded).

        Returns False if ``timeout`` expired first (the rows stay queued). Rows submitted
        while waiting do not delay the return.
        """
        self.start()
        target = self._seq
        self._flushers += 1
        self._kick.set()
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: self._done_through(target))
        except TimeoutError:
            return False
        finally:
            self._flushers -= 1
        self._raise_if_crashed()
        return True

    async def close(self, timeout: float | None = None) -> int:
        """Write everything, then stop; rows submitted from now on are dropped (counted).

        Returns how many rows were left unwritten: 0 unless ``timeout`` expired while the
        database was unreachable. With ``timeout=None`` it waits for the database as long
        as it takes.
        """
        self._closing = True
        self.start()
        assert self._task is not None
        self._kick.set()
        self._wake.set()
        try:
            await aio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        left = self._unwritten()
        if left:
            _log.info(
                "database writer closed with rows unwritten",
                unwritten=left,
                last_error=self._last_error,
            )
        self._raise_if_crashed()
        return left

    def take_unwritten(self) -> tuple[list[InstanceRow], list[CheckpointRow]]:
        """After :meth:`close`: every row never written, removed from the writer (for the
        journal). Snapshots come newest per instance, checkpoints in submission order."""
        instances = [row for row, _ in self._instances.take(len(self._instances))]
        checkpoints = [row for row, _ in self._checkpoints.take(len(self._checkpoints))]
        return instances, checkpoints

    def stats(self) -> WriterStats:
        return WriterStats(
            written_instances=self._written_instances,
            written_checkpoints=self._written_checkpoints,
            pending_instances=len(self._instances),
            pending_checkpoints=len(self._checkpoints),
            failures=self._failures,
            reconnects=self._reconnects,
            dropped=self._dropped,
            last_error=self._last_error,
            healthy=self._consecutive_failures == 0,
        )

    # -- background task --------------------------------------------------------------

    def _pending(self) -> bool:
        return bool(self._instances) or bool(self._checkpoints)

    def _unwritten(self) -> int:
        return len(self._instances) + len(self._checkpoints)

    def _urgent(self) -> bool:
        return (
            self._closing
            or self._flushers > 0
            or len(self._instances) >= self._max_batch
            or len(self._checkpoints) >= self._max_batch
        )

    def _done_through(self, target: int) -> bool:
        if self._task is not None and self._task.done():
            return True  # crashed or closed: nothing more will happen; flush reports it
        lows = [
            s
            for s in (self._instances.low_seq(), self._checkpoints.low_seq(), self._inflight_low)
            if s is not None
        ]
        return not lows or min(lows) > target

    def _raise_if_crashed(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            if not self._pending():
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urgent():
                self._kick.clear()
                wait = self._oldest_at + self._max_latency - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._kick.wait()
            if await self._write_batch():
                delay = self._retry_initial
            else:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._retry_max)

    async def _write_batch(self) -> bool:
        """Write one batch of each kind; False if the database was unreachable."""
        instances = self._instances.take(self._max_batch)
        checkpoints = self._checkpoints.take(self._max_batch)
        lows = [entries[0][1] for entries in (instances, checkpoints) if entries]
        self._inflight_low = min(lows, default=None)
        if self._pending():
            # Rows beyond this batch go next, without waiting another full period.
            self._oldest_at = time.monotonic()
        try:
            ok = await self._write_entries(
                instances, self._instances.put_back, self._store.upsert_instances, "instances"
            )
            if ok:
                ok = await self._write_entries(
                    checkpoints,
                    self._checkpoints.put_back,
                    self._store.add_checkpoints,
                    "checkpoints",
                )
            else:
                self._checkpoints.put_back(checkpoints)
        except asyncio.CancelledError:
            # close() gave up waiting: keep the rows counted as unwritten. Re-queueing a
            # half-written batch is harmless, both writes being idempotent.
            self._instances.put_back(instances)
            self._checkpoints.put_back(checkpoints)
            raise
        finally:
            self._inflight_low = None
            if len(self._checkpoints) < self._warn_pending:
                self._next_warn = self._warn_pending
            async with self._progress:
                self._progress.notify_all()
        return ok

    async def _write_entries(
        self,
        entries: list[_Entry[R]],
        put_back: Callable[[Sequence[_Entry[R]]], None],
        write: Callable[[Sequence[R]], Awaitable[None]],
        kind: str,
    ) -> bool:
        """Write ``entries``; False (and re-queued) if the database was unreachable."""
        if not entries:
            return True
        outcome = await self._attempt(write, [row for row, _ in entries])
        if outcome is _Outcome.OK:
            self._count_written(kind, len(entries))
            return True
        if outcome is _Outcome.TRANSIENT:
            put_back(entries)
            return False
        if len(entries) == 1:
            self._drop(kind, entries[0][0])
            return True
        # The database refused the batch itself: find the offending rows one by one.
        for i, (row, _) in enumerate(entries):
            outcome = await self._attempt(write, [row])
            if outcome is _Outcome.TRANSIENT:
                put_back(entries[i:])
                return False
            if outcome is _Outcome.OK:
                self._count_written(kind, 1)
            else:
                self._drop(kind, row)
        return True

    def _drop(self, kind: str, row: object) -> None:
        self._dropped += 1
        _log.error(
            "database refused a row; skipped", kind=kind, row=repr(row), error=self._last_error
        )

    async def _attempt(
        self, write: Callable[[Sequence[R]], Awaitable[None]], rows: Sequence[R]
    ) -> _Outcome:
        try:
            async with asyncio.timeout(self._write_timeout):
                await write(rows)
        except Exception as exc:
            self._failures += 1
            self._last_error = str(exc) or type(exc).__name__
            if is_transient(exc):
                if self._consecutive_failures == 0:
                    _log.info("database unavailable; buffering writes", error=self._last_error)
                    if self._on_health is not None:
                        self._on_health(False, self._last_error)
                self._consecutive_failures += 1
                return _Outcome.TRANSIENT
            return _Outcome.REFUSED
        if self._consecutive_failures:
            self._reconnects += 1
            self._consecutive_failures = 0
            _log.info("database writes resumed", pending=self._unwritten())
            if self._on_health is not None:
                self._on_health(True, None)
        return _Outcome.OK

    def _count_written(self, kind: str, n: int) -> None:
        if kind == "instances":
            self._written_instances += n
        else:
            self._written_checkpoints += n
