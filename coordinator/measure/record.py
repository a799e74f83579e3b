"""What has been measured of one instance so far, and its ``measures`` object (the results
JSON and ``instances.measures`` in Postgres carry the same one)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator.measure.series import Series
from coordinator.measure.spec import MeasureSpec
from coordinator.measure.tools import ToolLedger

MB = 1 << 20


@dataclass(slots=True)
class InstanceMeasures:
    spec: MeasureSpec = field(default_factory=MeasureSpec)
    series: Series = field(default_factory=Series)
    tools: ToolLedger = field(default_factory=ToolLedger)
    peak_mb: float | None = None
    rss_mb: float | None = None  # the latest sample
    memory_exceeded_at_s: float | None = None
    time_exceeded_at_s: float | None = None
    quality: dict[str, Any] | None = None
    # what an earlier coordinator process measured of an instance `coordinator resume` does
    # not launch again: kept as it was (an instance launched again is measured afresh)
    stored: dict[str, Any] | None = None

    def sample_memory(self, rss_bytes: int) -> float:
        mb = rss_bytes / MB
        self.rss_mb = mb
        if self.peak_mb is None or mb > self.peak_mb:
            self.peak_mb = mb
        return mb

    def point(self, t_s: float, tokens: int, cost: float, pct: float) -> None:
        self.series.add((t_s, tokens, cost, self.rss_mb or 0.0, pct))

    def as_dict(
        self, message_tokens: Callable[[str], int], denials: Mapping[str, int]
    ) -> dict[str, Any]:
        if self.stored is not None and self.series.empty:  # not measured in this process
            return dict(self.stored)
        spec = self.spec
        return {
            "quality": self.quality,
            "memory": {
                "peak_mb": round(self.peak_mb, 1) if self.peak_mb is not None else None,
                "limit_mb": spec.memory_limit_mb,
                "exceeded_at_s": _s(self.memory_exceeded_at_s),
            },
            "time_budget": {
                "seconds": spec.time_budget_s,
                "exceeded_at_s": _s(self.time_exceeded_at_s),
                "enforced": spec.enforce_time_budget,
            },
            "tools": self.tools.as_dict(message_tokens, denials),
            "series": self.series.as_lists(),
        }


def _s(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
