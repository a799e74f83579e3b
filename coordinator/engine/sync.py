"""The engine side of the barrier: when an instance waits, how it is paused, what it shows.

- ``milestone`` mode: an instance that crosses milestones mid-turn is paused at once (its
  whole process group is stopped, ``SIGSTOP``); a task records its arrival at every point
  it crossed, waits at the highest and resumes it (``SIGCONT``) on release or timeout.
  Several holds on one instance are counted: it resumes when the last one ends.
- ``lockstep`` mode: an instance's steps are its turns; turn k+1 is held back (stream-json
  input) until every live participant finished turn k (point ``step:k``). When no instance
  of the plan has more than one turn, the milestones are the steps, paused as above.
- An instance that ends excuses itself: completed -> ``complete``, anything else ->
  ``leave``; its pending wait is cancelled. One that never launched leaves too.

Barrier trouble (the database gone) never stops a run: the wait ends, a note says why.
Time spent waiting is kept apart from working time (``InstanceState.wait_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from coordinator.barrier import (
    Barrier,
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
)
from coordinator.config.models import SyncMode
from coordinator.engine.state import InstanceState, Status
from coordinator.errors import CoordinatorError
from coordinator.plan import RunPlan
from runner import aio

if TYPE_CHECKING:
    from coordinator.engine.instance import InstanceRun

log = structlog.get_logger("coordinator.sync")

# What a barrier call may raise that must not end the run: the database (DatabaseError,
# BarrierError are CoordinatorErrors) or the network under it.
BARRIER_TROUBLE = (CoordinatorError, OSError)


class SyncDriver:
    def __init__(
        self,
        plan: RunPlan,
        barrier: Barrier,
        *,
        states: Mapping[str, InstanceState],
        note: Callable[[str], None],
        run_of: Callable[[str], InstanceRun | None],
        changed: Callable[[InstanceState], None] = lambda state: None,
    ) -> None:
        self.mode = plan.sync.mode
        self.barrier = barrier
        self.states = states
        self._note = note
        self._run_of = run_of
        self._changed = changed
        longest = max((len(i.turns) for i in plan.instances), default=1)
        self.by_steps = self.mode is SyncMode.LOCKSTEP and longest > 1
        self.all_points: list[str] = (
            step_points(longest) if self.by_steps else milestone_points(plan.sync.milestones)
        )
        self.points: list[PointStatus] = []  # last read, for the status report and results
        self.timeouts: list[dict[str, object]] = []
        self._holds: dict[str, int] = {}
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._ended: set[str] = set()
        # Barrier writes the database could not take (it was away), in order; a retrier
        # delivers them when it is back, so an arrival made meanwhile is never lost.
        self._outbox: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._retrier: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.mode is not SyncMode.FREE

    # ------------------------------------------------------------------ lifecycle
    async def open(self, hosted: Sequence[str], *, rejoin: bool = False) -> None:
        """``rejoin``: this process holds ``hosted`` by a claim (a fleet runner): each joins
        as a participant a take-over rejoins, with the points it had passed (its carried
        state); one whose previous holder was waiting at a point not released yet waits
        there first, before it launches."""
        if not self.active:
            return
        if not rejoin:
            await self._guard("register", self.barrier.register(list(hosted)))
            return
        for name in hosted:
            state = self.states[name]
            passed = passed_points(
                state.milestones.reached, state.turns_done, by_steps=self.by_steps
            )
            await self._guard(f"rejoin {name}", self.barrier.rejoin(name, passed))
            await self.refresh()
            released = {p.point for p in self.points if p.released}
            target = rejoin_wait(passed, released)
            if target is not None:
                self._hold(state, target, pause=False)
                try:
                    await self._arrive_and_wait(state, [target], target)
                finally:
                    self._unhold(state, pause=False)

    async def close(self, outbox_deadline_s: float = 5.0) -> None:
        for task in list(self._chains.values()):
            task.cancel()
        pending = list(self._chains.values()) + list(self._background)
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        if self._retrier is not None:
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(asyncio.shield(self._retrier), outbox_deadline_s)
            self._retrier.cancel()
        if self._outbox:
            self._note(
                f"barrier: {len(self._outbox)} arrival(s)/end(s) could not be recorded "
                f"(database away): {', '.join(what for what, _ in self._outbox)}"
            )
        if self.active:
            await self.refresh()
        with contextlib.suppress(*BARRIER_TROUBLE):
            await self.barrier.close()

    async def refresh(self) -> None:
        """Re-read the points (status line) and the arrival counts of those waiting."""
        if not self.active:
            return
        try:
            self.points = await self.barrier.points()
        except BARRIER_TROUBLE as exc:
            log.info("barrier points unavailable", error=str(exc))
            return
        for state in self.states.values():
            state.wait_arrived = (
                self.arrived_of(state.wait_point) if state.wait_point is not None else None
            )

    def sync_line(self) -> str | None:
        if not self.active:
            return None
        return render_sync_line(self.points, self.all_points)

    def arrived_of(self, point: str) -> tuple[int, int] | None:
        """(arrived, expected) at ``point`` as last read; None before the first read."""
        for status in self.points:
            if status.point == point:
                return len(status.arrived), len(status.arrived) + len(status.missing)
        return None

    def summary(self) -> dict[str, object]:
        """The sync section of the results: every point as last read, every timeout."""
        return {
            "mode": self.mode.value,
            "points_from": "steps" if self.by_steps else "milestones",
            "timeout_s": self.barrier.timeout_s if self.active else None,
            "points": [
                {
                    "point": p.point,
                    "label": point_label(p.point),
                    "arrived": p.arrived,
                    "first_arrival_at": p.first_arrival_at.isoformat(),
                    "released_at": p.released_at.isoformat() if p.released_at else None,
                    "timed_out": p.timed_out,
                    "missing": p.missing,
                }
                for p in self.points
            ],
            "timeouts": self.timeouts,
            "line": self.sync_line(),
        }

    # ------------------------------------------------------------------ engine hooks
    async def before_turn(self, state: InstanceState, index: int) -> None:
        """Lock-step: hold turn ``index`` (0-based) until everyone finished turn ``index``-1
        (point ``step:index``)."""
        if not self.by_steps or index < 1:
            return
        point = step_point(index)
        self._hold(state, point, pause=False)
        try:
            await self._arrive_and_wait(state, [point], point)
        finally:
            self._unhold(state, pause=False)

    def on_progress(self, state: InstanceState, crossed: list[int]) -> None:
        """Milestones crossed: pause mid-turn and wait at the highest (not in step mode)."""
        if not self.active or self.by_steps or not crossed or state.status.finished:
            return
        points = [milestone_point(p) for p in crossed]
        final = state.turns_done >= len(state.plan.turns)
        if final:  # its last result: it completes in a moment and so passes every point
            self._spawn(self._arrive_only(state, points))
            return
        target = points[-1]
        self._hold(state, target, pause=True)
        previous = self._chains.get(state.name)
        self._chains[state.name] = asyncio.create_task(
            self._milestone_wait(state, points, target, previous),
            name=f"sync:{state.name}:{target}",
        )

    def on_finished(self, state: InstanceState) -> None:
        if not self.active or state.name in self._ended:
            return
        self._ended.add(state.name)
        chain = self._chains.pop(state.name, None)
        if chain is not None:
            chain.cancel()
        name = state.name
        if state.status is Status.COMPLETED:
            self._spawn(self._deliver(f"{name} completed", lambda: self.barrier.complete(name)))
        else:
            reason = state.reason or state.error or state.status.value
            self._spawn(self._deliver(f"{name} left", lambda: self.barrier.leave(name, reason)))

    # ------------------------------------------------------------------ waiting
    async def _milestone_wait(
        self,
        state: InstanceState,
        points: list[str],
        target: str,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            if previous is not None and not previous.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(previous)
            await self._arrive_and_wait(state, points, target)
        finally:
            self._unhold(state, pause=True)
            if self._chains.get(state.name) is asyncio.current_task():
                del self._chains[state.name]

    async def _arrive_only(self, state: InstanceState, points: list[str]) -> None:
        for point in points:
            await self._deliver(
                f"{state.name} at {point_label(point)}", self._arrival(state, point)
            )

    def _arrival(self, state: InstanceState, point: str) -> Callable[[], Awaitable[object]]:
        return lambda: self.barrier.arrive(state.name, point)

    async def _arrive_and_wait(self, state: InstanceState, points: list[str], target: str) -> None:
        label = point_label(target)
        delivered = True
        for point in points:
            what = f"{state.name} at {point_label(point)}"
            delivered = await self._deliver(what, self._arrival(state, point)) and delivered
        if not delivered:  # recorded once the database is back; nobody to wait with now
            self._note(f"{state.name}: barrier unavailable at {label}, continuing")
            return
        try:
            await self.refresh()
            outcome = await self.barrier.wait(state.name, target)
        except BARRIER_TROUBLE as exc:
            self._note(f"{state.name}: barrier unavailable at {label}, continuing: {exc}")
            return
        self._record(state, target, outcome)

    # ------------------------------------------------------------------ outages
    async def _deliver(self, what: str, call: Callable[[], Awaitable[object]]) -> bool:
        """Make a barrier write now, or keep it (in order) for when the database is back.
        True if it was made now."""
        if not self._outbox:
            try:
                await call()
                return True
            except BARRIER_TROUBLE as exc:
                log.info("barrier write kept for later", what=what, error=str(exc))
                self._note(
                    "barrier database unavailable: arrivals are kept and recorded when it "
                    "is back (details in the log file)"
                )
        self._outbox.append((what, call))
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._redeliver(), name="sync:outbox")
        return False

    async def _redeliver(self, delay: float = 0.5) -> None:
        delivered = 0
        while self._outbox:
            what, call = self._outbox[0]
            try:
                await call()
            except BARRIER_TROUBLE as exc:
                log.info("barrier still unavailable", what=what, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._outbox.pop(0)
            delivered += 1
        self._note(f"barrier database back: {delivered} kept arrival(s)/end(s) recorded")
        await self.refresh()

    def _record(self, state: InstanceState, point: str, outcome: WaitOutcome) -> None:
        label = point_label(point)
        if outcome.note:
            self._note(f"{state.name}: {label}: {outcome.note}")
        if outcome.timed_out:
            who = ", ".join(outcome.missing) or "nobody"
            entry: dict[str, object] = {
                "point": point,
                "instance": state.name,
                "missing": list(outcome.missing),
            }
            if not any(t["point"] == point for t in self.timeouts):
                self._note(f"sync timeout at {label}: continuing without {who}")
            self.timeouts.append(entry)
        state.sync_waits.append((point, round(outcome.waited_s, 3), outcome.timed_out))

    # ------------------------------------------------------------------ holds
    def _hold(self, state: InstanceState, point: str, *, pause: bool) -> None:
        count = self._holds.get(state.name, 0)
        self._holds[state.name] = count + 1
        state.wait_point = point
        if count == 0:
            if pause:
                run = self._run_of(state.name)
                if run is not None:
                    run.suspend()
            if state.status is not Status.PAUSED:  # paused by a command: shown so
                state.status = Status.WAITING
            state.waiting_since = time.monotonic()
            self._changed(state)

    def _unhold(self, state: InstanceState, *, pause: bool) -> None:
        count = self._holds.get(state.name, 1) - 1
        self._holds[state.name] = count
        if count > 0:
            return
        now = time.monotonic()
        if state.waiting_since is not None:
            state.wait_s += now - state.waiting_since
        state.waiting_since = None
        state.wait_point = None
        state.wait_arrived = None
        state.last_activity_mono = now  # the idle watchdog counts from the release
        if pause:
            run = self._run_of(state.name)
            if run is not None:
                run.resume()
        if state.status is Status.WAITING:
            state.status = Status.RUNNING
        self._changed(state)

    # ------------------------------------------------------------------ helpers
    async def _guard(self, what: str, call: Awaitable[object]) -> None:
        try:
            await call
        except BARRIER_TROUBLE as exc:
            self._note(f"barrier: could not {what}: {exc}")

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
