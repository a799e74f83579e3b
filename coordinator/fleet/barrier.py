"""One barrier per runner and run: every engine the runner holds for a run in milestone or
lockstep sync shares it, as the instances of a one-host run share theirs. So a runner
holding a hundred participants keeps one pool and one LISTEN connection for them, not a
hundred (with 1,000 participants over 10 runners that is about 60 connections, not
2,000+), one watcher per point, one heartbeat for all its participants, and one read of
the points for every engine's status line.

The engines may not close it (each closes its sync when its instance ends): the runner
closes it when it stops (:meth:`SharedBarrier.close_shared`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from coordinator.barrier import Barrier, PointStatus, WaitOutcome

POINTS_MAX_AGE_S = 0.25  # every engine refreshes its status line every 0.5 s: one read


class SharedBarrier:
    """A :class:`Barrier` for several engines of one process; see the module."""

    def __init__(self, inner: Barrier) -> None:
        self.inner = inner
        self.timeout_s = inner.timeout_s
        self._points: list[PointStatus] = []
        self._read_at = float("-inf")
        self._reading: asyncio.Task[list[PointStatus]] | None = None

    async def register(self, names: Sequence[str]) -> None:
        await self.inner.register(names)

    async def rejoin(self, name: str, passed: Sequence[str]) -> bool:
        return await self.inner.rejoin(name, passed)

    async def arrive(self, name: str, point: str) -> None:
        await self.inner.arrive(name, point)

    async def wait(self, name: str, point: str) -> WaitOutcome:
        return await self.inner.wait(name, point)

    async def leave(self, name: str, reason: str) -> None:
        await self.inner.leave(name, reason)

    async def complete(self, name: str) -> None:
        await self.inner.complete(name)

    async def points(self) -> list[PointStatus]:
        """The points as read at most POINTS_MAX_AGE_S ago; one read at a time."""
        if time.monotonic() - self._read_at < POINTS_MAX_AGE_S:
            return self._points
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self.inner.points())
        points = await asyncio.shield(self._reading)
        if self._reading.done():
            self._points, self._read_at = points, time.monotonic()
        return points

    async def close(self) -> None:
        """An engine is done with it: nothing to do (the runner closes it)."""

    async def close_shared(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        await self.inner.close()
