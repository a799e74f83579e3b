"""Where the engine reports what happens: the database, later the barrier. A protocol with
a no-op default, so the engine runs (and is tested) without Postgres."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from coordinator.engine.state import InstanceState, MilestoneHit
    from coordinator.plan import RunPlan


class RunSink(Protocol):
    async def open(
        self, plan: RunPlan, host: str, note: Callable[[str], None] | None = None
    ) -> None:
        """Start recording ``plan``; ``note`` tells the user something (one line)."""
        ...

    def instance_changed(self, state: InstanceState) -> None: ...
    def milestone(self, state: InstanceState, hit: MilestoneHit, label: str) -> None: ...
    async def close(self, status: str, results: dict[str, Any]) -> None: ...


class NullSink:
    async def open(
        self, plan: RunPlan, host: str, note: Callable[[str], None] | None = None
    ) -> None:
        return None

    def instance_changed(self, state: InstanceState) -> None:
        return None

    def milestone(self, state: InstanceState, hit: MilestoneHit, label: str) -> None:
        return None

    async def close(self, status: str, results: dict[str, Any]) -> None:
        return None
