"""In-process barriers: :class:`MemoryBarrier` for runs without a database (every
participant lives in this process) and :class:`FreeBarrier` for sync mode ``free``.

Same semantics as the Postgres barrier, on this process's monotonic clock: the decision is
:func:`coordinator.barrier.rules.decide`, re-evaluated on every arrival, completion and
departure, and by each waiter when the timeout of its point is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from coordinator.barrier.rules import (
    KeepWaiting,
    PointStatus,
    Release,
    WaitOutcome,
    decide,
    missing,
    point_sort_key,
)
from runner import aio


@dataclass(slots=True)
class _Point:
    first_arrival: float
    arrived: dict[str, float] = field(default_factory=dict)
    release: Release | None = None
    released_at: float | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBarrier:
    def __init__(
        self,
        orchestration_id: str,
        participants: Sequence[str],
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.orchestration_id = orchestration_id
        self.timeout_s = timeout_s
        self._clock = clock
        self._participants: dict[str, None] = dict.fromkeys(participants)
        self._ended: dict[str, tuple[str, str | None]] = {}  # name -> (state, reason)
        self._points: dict[str, _Point] = {}
        # Wall-clock anchor so PointStatus can carry datetimes like the Postgres barrier.
        self._wall0 = datetime.now(UTC)
        self._mono0 = clock()
        self._closed = False

    async def register(self, names: Sequence[str]) -> None:
        for name in names:
            self._participants.setdefault(name, None)

    async def rejoin(self, name: str, passed: Sequence[str]) -> bool:
        """One process: a take-over here is a relaunch; it is live again unless completed."""
        if self._ended.get(name, ("", None))[0] == "completed":
            return False
        self._ended.pop(name, None)
        self._participants.setdefault(name, None)
        for point in passed:
            await self.arrive(name, point)
        return True

    async def arrive(self, name: str, point: str) -> None:
        now = self._clock()
        state = self._points.get(point)
        if state is None:
            state = self._points[point] = _Point(first_arrival=now)
        state.arrived.setdefault(name, now)
        self._evaluate(point, state)

    async def wait(self, name: str, point: str) -> WaitOutcome:
        started = self._clock()
        while True:
            state = self._points.get(point)
            if state is None:  # wait() without arrive(): nothing to wait for yet
                state = self._points[point] = _Point(first_arrival=started)
            decision = self._evaluate(point, state)
            if isinstance(decision, Release):
                return WaitOutcome(
                    released=not decision.timed_out,
                    timed_out=decision.timed_out,
                    missing=list(decision.missing),
                    waited_s=self._clock() - started,
                )
            if self._closed:
                return WaitOutcome(False, False, list(decision.missing), 0.0, "barrier closed")
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(state.opened.wait(), decision.remaining_s)

    async def leave(self, name: str, reason: str) -> None:
        self._end(name, "left", reason)

    async def complete(self, name: str) -> None:
        self._end(name, "completed", None)

    async def points(self) -> list[PointStatus]:
        found: list[PointStatus] = []
        excused = set(self._ended)
        for point, state in self._points.items():
            arrived = sorted(state.arrived, key=lambda n: (state.arrived[n], n))
            release = state.release
            found.append(
                PointStatus(
                    point=point,
                    arrived=arrived,
                    first_arrival_at=self._wall(state.first_arrival),
                    released_at=(
                        self._wall(state.released_at) if state.released_at is not None else None
                    ),
                    timed_out=release.timed_out if release else False,
                    missing=(
                        list(release.missing)
                        if release
                        else list(missing(self._participants, state.arrived, excused))
                    ),
                )
            )
        found.sort(key=lambda p: point_sort_key(p.point))
        return found

    async def close(self) -> None:
        self._closed = True
        for state in self._points.values():
            state.opened.set()

    # ------------------------------------------------------------------ internals
    def _end(self, name: str, how: str, reason: str | None) -> None:
        self._participants.setdefault(name, None)
        self._ended.setdefault(name, (how, reason))
        for point, state in self._points.items():
            self._evaluate(point, state)

    def _evaluate(self, point: str, state: _Point) -> Release | KeepWaiting:
        if state.release is not None:
            return state.release
        now = self._clock()
        decision = decide(
            self._participants,
            state.arrived,
            self._ended,
            now - state.first_arrival,
            self.timeout_s,
        )
        if isinstance(decision, Release):
            state.release = decision
            state.released_at = now
            state.opened.set()
        return decision

    def _wall(self, mono: float) -> datetime:
        return self._wall0 + timedelta(seconds=mono - self._mono0)


class FreeBarrier:
    """Sync mode ``free``: nobody ever waits; nothing is recorded."""

    timeout_s = 0.0

    async def register(self, names: Sequence[str]) -> None:
        return None

    async def rejoin(self, name: str, passed: Sequence[str]) -> bool:
        return True

    async def arrive(self, name: str, point: str) -> None:
        return None

    async def wait(self, name: str, point: str) -> WaitOutcome:
        return WaitOutcome(released=True, timed_out=False, missing=[], waited_s=0.0)

    async def leave(self, name: str, reason: str) -> None:
        return None

    async def complete(self, name: str) -> None:
        return None

    async def points(self) -> list[PointStatus]:
        return []

    async def close(self) -> None:
        return None
