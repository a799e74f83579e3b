"""A bounded time series per instance, for charts. Pure.

Points are ``[t_s, total_tokens, cost_usd, rss_mb, progress_pct]``, ``t_s`` from the
instance's start. Kept in memory at a stride that doubles whenever the buffer fills (so a
run of any length holds at most ``2 * limit`` points), and handed out evenly downsampled to
at most ``limit`` points, the first and the latest always among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERIES_POINTS = 240
Point = tuple[float, int, float, float, float]


def downsample(points: list[Point], limit: int = SERIES_POINTS) -> list[Point]:
    """At most ``limit`` points, evenly spaced by index, the first and the last kept."""
    n = len(points)
    if n <= limit:
        return list(points)
    if limit <= 1:
        return points[-1:]
    return [points[round(i * (n - 1) / (limit - 1))] for i in range(limit)]


@dataclass(slots=True)
class Series:
    limit: int = SERIES_POINTS
    _points: list[Point] = field(default_factory=list)
    _stride: int = 1
    _offered: int = 0
    _latest: Point | None = None

    def add(self, point: Point) -> None:
        self._latest = point
        if self._offered % self._stride == 0:
            self._points.append(point)
            if len(self._points) >= 2 * self.limit:
                self._points = self._points[::2]
                self._stride *= 2
        self._offered += 1

    @property
    def empty(self) -> bool:
        return self._latest is None

    def points(self) -> list[Point]:
        kept = self._points
        if self._latest is not None and (not kept or kept[-1] is not self._latest):
            kept = [*kept, self._latest]
        return downsample(kept, self.limit)

    def as_lists(self) -> list[list[float]]:
        return [
            [round(t, 3), tokens, round(cost, 6), round(rss, 1), round(pct, 1)]
            for t, tokens, cost, rss, pct in self.points()
        ]
