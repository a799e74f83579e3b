"""The instance rows of every engine a runner holds, written in one statement.

Each engine flushes its row every 0.25 s. Written one transaction per engine (a lock on the
row, an upsert, a commit), a hundred engines per runner were about 400 transactions a second
per runner, and at ten runners Postgres used more than a core for them: every event loop
then waited for a core, and a budget block reached the other runners late.

:class:`FencedRows` is a group commit: an engine's write joins the batch that goes next,
while the one before it is in flight; the whole batch is one ``UPDATE ... FROM unnest(...)``
that writes a row only while it still carries the epoch of this runner's claim (a take-over
moves the epoch; the UPDATE re-checks it on a row changed meanwhile). Each engine's own
writer keeps its buffering and retries: a batch that fails fails for each of its writers,
and a batch the database refuses as wrong (not unreachable) is written row by row, so one
bad row does not sink the others.

The statement also watches the runs' shared budgets (``watching``): a batch whose rows take
a run past a limit notifies every runner (the budget alarm) at its commit, the moment the
crossing is visible, rather than at the next poll of some runner plus an announcement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog

from coordinator.db.postgres import (
    _columns,
    _instance_args,
    database_errors,
    is_transient,
    query,
)
from coordinator.db.rows import InstanceRow
from coordinator.fleet.budgets import Watch
from coordinator.fleet.queue import _sql

log = structlog.get_logger("coordinator.fleet.rows")

MAX_BATCH = 500


@dataclass(slots=True)
class _Write:
    row: InstanceRow
    epoch: int
    done: asyncio.Future[bool] = field(repr=False)


@dataclass(slots=True)
class BatchStats:
    statements: int = 0
    rows: int = 0
    largest: int = 0


class FencedRows:
    """One writer of instance rows for all of a runner's engines (see the module), and
    of each run's heartbeat: every engine's sink beats its run's row every lease/3, and a
    thousand engines beating one row at lease 30 s were a hundred updates a second on it
    (the barrier's decisions at 1,000 participants waited behind them: release row p50
    1.4 s, against 133 ms at a 120 s lease); here a run is beaten at most every
    ``beat_gap_s`` by this runner, whichever engine asks."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = MAX_BATCH,
        on_written: Callable[[], None] | None = None,
        beat_gap_s: float = 0.0,
        watching: Callable[[], Sequence[Watch]] | None = None,
        alarm_channel: str = "",
        on_crossed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self._on_written = on_written  # after each statement that wrote rows
        self.beat_gap_s = beat_gap_s
        self._watching = watching  # the shared budgets to check in each statement
        self._alarm_channel = alarm_channel
        self._on_crossed = on_crossed  # (run, budget key): a statement notified its crossing
        self._beaten: dict[str, float] = {}  # run -> when this runner last beat it
        self.beats = 0
        self._pending: dict[tuple[str, str], list[_Write]] = {}
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    async def write(self, row: InstanceRow, epoch: int) -> bool:
        """Write ``row`` if its instance still carries ``epoch``; False: it does not (the
        claim was taken over). Raises what the database raised for its batch."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(row.key, []).append(_Write(row, epoch, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="fleet-rows")
        return await done

    async def beat_run(self, orchestration_id: str) -> None:
        """The run's heartbeat, unless this runner beat it less than beat_gap_s ago."""
        now = time.monotonic()
        if now - self._beaten.get(orchestration_id, float("-inf")) < self.beat_gap_s:
            return
        self._beaten[orchestration_id] = now  # the engines asking meanwhile skip
        try:
            with database_errors("heartbeat"):
                await self.pool.execute(query("heartbeat_orchestration"), orchestration_id)
        except BaseException:
            self._beaten.pop(orchestration_id, None)  # not beaten: the next asker tries
            raise
        self.beats += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for writes in self._pending.values():
            for w in writes:
                if not w.done.done():
                    w.done.cancel()
        self._pending.clear()

    async def _drain(self) -> None:
        """Batches while writes wait: those that arrived during one statement go in the
        next (the more engines write at once, the larger the batch)."""
        while self._pending:
            keys = list(self._pending)[: self.max_batch]
            batch = [self._pending.pop(k) for k in keys]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                for writes in batch:
                    for w in writes:
                        if not w.done.done():
                            w.done.cancel()
                raise

    async def _write(self, batch: list[list[_Write]]) -> None:
        # per key only the newest snapshot is written (each row replaces every field); the
        # older writes of the same key share its outcome
        newest = [writes[-1] for writes in batch]
        try:
            written = await self._statement(newest)
        except Exception as exc:
            if len(newest) > 1 and not is_transient(exc):  # refused as wrong: find which
                log.info("a batch of instance rows was refused: row by row", error=str(exc))
                for writes in batch:
                    await self._write([writes])
                return
            for writes in batch:
                for w in writes:
                    if not w.done.done():
                        w.done.set_exception(exc)
            return
        for writes in batch:
            ok = writes[-1].row.key in written
            for w in writes:
                if not w.done.done():
                    w.done.set_result(ok)

    async def _statement(self, writes: list[_Write]) -> set[tuple[str, str]]:
        args = _columns([w.row for w in writes], _instance_args)
        watched = list(self._watching()) if self._watching is not None else []
        members = [(i, n) for i, b in enumerate(watched, 1) for n in b.members or ()]
        with database_errors("write instances"):
            records = await self.pool.fetch(
                _sql("fenced_update_instances"),
                *args,
                [w.epoch for w in writes],
                [b.run for b in watched],
                [b.key for b in watched],
                [b.members is None for b in watched],
                [b.in_tokens for b in watched],
                [b.cache_reads for b in watched],
                [b.limit for b in watched],
                [i for i, _ in members],
                [n for _, n in members],
                self._alarm_channel,
            )
        self.stats.statements += 1
        self.stats.rows += len(writes)
        self.stats.largest = max(self.stats.largest, len(writes))
        written = {(r["orchestration_id"], r["name"]) for r in records if r["kind"] == "row"}
        if self._on_crossed is not None:
            for r in records:
                if r["kind"] == "crossed":
                    self._on_crossed(r["orchestration_id"], r["name"])
        if written and self._on_written is not None:
            self._on_written()
        return written
