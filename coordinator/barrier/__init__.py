"""Barriers: Claude Code instances that wait for each other (sync modes milestone, lockstep).

- ``free``: nobody waits (:class:`FreeBarrier`, no I/O).
- ``milestone``: an instance reaching milestone M pauses (``milestone:M``) until every
  live participant reached M, completed or left, or until ``timeout_s`` after the FIRST
  arrival at M; then the point is released and a timeout records who was missing.
- ``lockstep``: nobody sends turn k+1 before every live participant finished turn k
  (point ``step:k``); same timeout rule.

A completed participant has passed every point; one that failed, timed out, was blocked,
cancelled or skipped has left and nobody waits for it. Every wait ends by the timeout.
A participant held by a claim (a fleet runner's) ``rejoin``s instead of registering: when
its process is gone it is taken over, not gone, so the lease does not excuse it; its new
holder rejoins it, the points it had passed stay passed, every later one waits for it.

Implementations: :class:`PostgresBarrier` (rows + LISTEN/NOTIFY; participants may live in
several processes sharing one orchestration id) and :class:`MemoryBarrier` (one process).

Wiring into the engine (``coordinator/engine/orchestrator.py``)::

    # Orchestrator.run(), before the launch tasks (dsn: the resolved DSN, or None):
    names = [inst.name for inst in plan.instances]
    self.barrier = await open_barrier(
        plan.sync.mode, plan.orchestration_id, dsn,
        participants=names,            # EVERY instance of the orchestration
        timeout_s=plan.sync.timeout_s,
    )
    await self.barrier.register(names) # the instances THIS process hosts
    ...                                # finally: await self.barrier.close()

    # Hooks.before_turn(state, index)  -- lockstep only; index >= 1
    point = step_point(index)
    outcome = await self._sync(state, point)    # see below

    # Hooks.on_progress(state, crossed) -- milestone only; sync hook: start a task
    if crossed and not state.status.finished:
        run.suspend()                  # SIGSTOP mid-turn; counted per instance, see below
        task: arrive at milestone_point(p) for EVERY p in crossed, then wait only at
        milestone_point(max(crossed)); finally run.resume() (when no other task of this
        instance still holds it suspended)

    # Hooks.on_finished(state)          -- every mode except free; sync hook: start a task
    COMPLETED -> barrier.complete(name); anything else -> barrier.leave(name, reason),
    and cancel that instance's pending sync task.
    # SKIPPED / CANCELLED before launch (_end_unlaunched, _skip_state): barrier.leave too.

    async def _sync(self, state, point) -> None:
        state.status, state.waiting_since = Status.WAITING, time.monotonic()
        state.wait_note = f"waiting at {point_label(point)}"
        try:
            await self.barrier.arrive(state.name, point)
            outcome = await self.barrier.wait(state.name, point)
        except DatabaseError as exc:   # never block a run on the barrier's database
            self._note(f"barrier unavailable at {point_label(point)}: {exc}")
        else:
            if outcome.timed_out:
                self._note(f"sync timeout at {point_label(point)}: missing "
                           + ", ".join(outcome.missing))
        finally:
            state.wait_s += time.monotonic() - state.waiting_since
            state.waiting_since, state.wait_note = None, None
            if not state.status.finished:
                state.status = Status.RUNNING

Status line: ``render_sync_line(await barrier.points(), all_points)`` with
``all_points = milestone_points(plan.sync.milestones)`` or ``step_points(max_turns)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from coordinator.barrier.memory import FreeBarrier, MemoryBarrier
from coordinator.barrier.postgres import PostgresBarrier
from coordinator.barrier.rules import (
    BarrierError,
    PointStatus,
    WaitOutcome,
    milestone_point,
    milestone_points,
    passed_points,
    point_label,
    rejoin_wait,
    render_sync_line,
    step_point,
    step_points,
    timeouts_of,
)

__all__ = [
    "Barrier",
    "BarrierError",
    "FreeBarrier",
    "MemoryBarrier",
    "PointStatus",
    "PostgresBarrier",
    "WaitOutcome",
    "milestone_point",
    "milestone_points",
    "open_barrier",
    "passed_points",
    "point_label",
    "rejoin_wait",
    "render_sync_line",
    "step_point",
    "step_points",
    "timeouts_of",
]


@runtime_checkable
class Barrier(Protocol):
    """What the engine uses; every method is safe to repeat (idempotent)."""

    timeout_s: float

    async def register(self, names: Sequence[str]) -> None:
        """The participants this process hosts."""
        ...

    async def rejoin(self, name: str, passed: Sequence[str]) -> bool:
        """``name``, held by a claim here (first claim or take-over), is a live participant
        whose lease does not excuse it; ``passed``: points it had passed (recorded as its
        arrivals). False when it had completed."""
        ...

    async def arrive(self, name: str, point: str) -> None:
        """Record that ``name`` reached ``point``; releases it if that was the last one."""
        ...

    async def wait(self, name: str, point: str) -> WaitOutcome:
        """Until ``point`` is released or timed out (never longer than about timeout_s)."""
        ...

    async def leave(self, name: str, reason: str) -> None:
        """``name`` stopped without completing: nobody waits for it any more."""
        ...

    async def complete(self, name: str) -> None:
        """``name`` completed: it has passed every point."""
        ...

    async def points(self) -> list[PointStatus]:
        """Every point reached so far, for the sync status line."""
        ...

    async def close(self) -> None: ...


async def open_barrier(
    mode: str,
    orchestration_id: str,
    dsn: str | None,
    *,
    participants: Sequence[str],
    timeout_s: float = 60.0,
    poll_interval_s: float = 1.0,
    lease_s: float = 30.0,
) -> Barrier:
    """The barrier for ``mode`` (a SyncMode or its value): Postgres when ``dsn`` is given,
    in-memory otherwise; :class:`FreeBarrier` for ``free``.

    ``participants`` lists every instance of the orchestration (the plan), including those
    other processes host; each process then ``register``s its own.
    """
    mode = str(mode)
    if mode not in ("free", "milestone", "lockstep"):
        raise BarrierError(f"unknown sync mode {mode!r}")
    if mode == "free":
        return FreeBarrier()
    if dsn is None:
        return MemoryBarrier(orchestration_id, participants, timeout_s)
    return await PostgresBarrier.open(
        dsn,
        orchestration_id,
        mode=mode,
        participants=participants,
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
        lease_s=lease_s,
    )
