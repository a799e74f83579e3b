"""Progress of one instance and the milestones it crosses. Pure.

Sources, in order of trust: completed steps / total steps (turns of a multi-turn session);
``PROGRESS: NN%`` markers in assistant text; the CLI's todo tool (completed / total items).
A more trusted source bounds a less trusted one: with 4 steps, a marker of 50% during step 2
means 25% + 50% of 25%. Progress never goes backwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runner.events import Assistant, Event, Result

MARKER = re.compile(r"PROGRESS:\s*(\d{1,3}(?:\.\d+)?)\s*%", re.IGNORECASE)
TODO_TOOLS = frozenset({"TodoWrite"})


@dataclass(slots=True)
class ProgressTracker:
    total_steps: int = 1
    completed_steps: int = 0
    _marker: float | None = None  # within the current step, 0..100
    _todo: float | None = None
    _pct: float = 0.0

    def feed(self, event: Event) -> bool:
        """Take one event; True when progress moved."""
        if isinstance(event, Assistant):
            changed = False
            for text in event.texts:
                found = MARKER.findall(text)
                if found:
                    self._marker = min(100.0, float(found[-1]))
                    changed = True
            for tool in event.tool_uses:
                if tool.name in TODO_TOOLS:
                    ratio = todo_ratio(tool.input.get("todos"))
                    if ratio is not None:
                        self._todo = ratio
                        changed = True
            return self._update() if changed else False
        if isinstance(event, Result):
            return self.step_done()
        return False

    def step_done(self) -> bool:
        self.completed_steps = min(self.total_steps, self.completed_steps + 1)
        self._marker = None
        self._todo = None
        return self._update()

    def complete(self) -> bool:
        self.completed_steps = self.total_steps
        return self._update()

    def resume_at(self, completed_steps: int, pct: float) -> None:
        """Go on from where an earlier coordinator process left this instance."""
        self.completed_steps = min(self.total_steps, completed_steps)
        self._update()
        self._pct = max(self._pct, min(100.0, pct))

    @property
    def pct(self) -> float:
        return self._pct

    def _update(self) -> bool:
        within = self._marker if self._marker is not None else self._todo
        step_share = 100.0 / self.total_steps
        value = self.completed_steps * step_share
        if within is not None and self.completed_steps < self.total_steps:
            value += step_share * within / 100.0
        value = min(100.0, value)
        if value > self._pct:
            self._pct = value
            return True
        return False


def todo_ratio(todos: Any) -> float | None:
    if not isinstance(todos, list) or not todos:
        return None
    done = sum(1 for t in todos if isinstance(t, dict) and t.get("status") == "completed")
    return 100.0 * done / len(todos)


@dataclass(slots=True)
class MilestoneTracker:
    """Reports each configured milestone the first time progress reaches it."""

    milestones: tuple[int, ...] = (30, 50, 70, 90)
    reached: list[int] = field(default_factory=list)

    def crossed(self, pct: float) -> list[int]:
        new = [m for m in self.milestones if m <= pct and m not in self.reached]
        self.reached.extend(new)
        return new

    def pending(self) -> Iterable[int]:
        return (m for m in self.milestones if m not in self.reached)
