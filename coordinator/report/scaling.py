"""How a cost grows with a tier's complexity: a least-squares fit of log(y) on log(x), its
exponent in words, and where the local slope between consecutive tiers changes. Pure.

Words (the exponent b of y ~ x^b): ``sublinear`` below 0.9, ``linear`` from 0.9 to 1.1,
``superlinear`` above 1.1. The band of +-0.1 around 1 keeps noise from two or three tiers
from flipping the word; a tier 8x as complex costing 7.1x-9.5x as much is "linear"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SUBLINEAR_BELOW = 0.9
SUPERLINEAR_ABOVE = 1.1


def words_for(exponent: float) -> str:
    if exponent < SUBLINEAR_BELOW:
        return "sublinear"
    if exponent > SUPERLINEAR_ABOVE:
        return "superlinear"
    return "linear"


@dataclass(frozen=True, slots=True)
class Segment:
    """The local slope between two consecutive tiers."""

    x_from: float
    x_to: float
    exponent: float
    words: str

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.x_from,
            "to": self.x_to,
            "exponent": round(self.exponent, 4),
            "words": self.words,
        }


@dataclass(frozen=True, slots=True)
class Fit:
    """y = coefficient * x ** exponent over the points used."""

    metric: str
    exponent: float
    coefficient: float
    r_squared: float | None  # None with two points (a line through both: always 1)
    words: str
    points: tuple[tuple[float, float], ...]
    segments: tuple[Segment, ...]
    summary: str  # "sublinear up to 3x, superlinear at 8x"
    unit: str = "x"  # after an x value: "3x" (a multiplier), "" (an input size)

    def predict(self, x: float) -> float:
        return float(self.coefficient * x**self.exponent)

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "exponent": round(self.exponent, 4),
            "coefficient": self.coefficient,
            "r_squared": round(self.r_squared, 4) if self.r_squared is not None else None,
            "words": self.words,
            "points": [list(p) for p in self.points],
            "segments": [s.as_dict() for s in self.segments],
            "summary": self.summary,
        }


def fit_power_law(
    metric: str, points: Sequence[tuple[float, float]], *, unit: str = "x"
) -> Fit | None:
    """The fit over the points with x > 0 and y > 0 (a log needs them); None unless at
    least two distinct x remain. Several points at one x (instances of one tier) are
    averaged first, so each tier weighs the same."""
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y):
            by_x.setdefault(float(x), []).append(float(y))
    tiers = sorted((x, sum(ys) / len(ys)) for x, ys in by_x.items())
    if len(tiers) < 2:
        return None
    lx = [math.log(x) for x, _ in tiers]
    ly = [math.log(y) for _, y in tiers]
    n = len(tiers)
    mx, my = sum(lx) / n, sum(ly) / n
    sxx = sum((a - mx) ** 2 for a in lx)
    sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    r_squared = None
    if n > 2:
        ss_tot = sum((b - my) ** 2 for b in ly)
        ss_res = sum((b - (intercept + slope * a)) ** 2 for a, b in zip(lx, ly, strict=True))
        r_squared = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    segments = tuple(_segment(tiers[k], tiers[k + 1]) for k in range(len(tiers) - 1))
    return Fit(
        metric=metric,
        exponent=slope,
        coefficient=math.exp(intercept),
        r_squared=r_squared,
        words=words_for(slope),
        points=tuple(tiers),
        segments=segments,
        summary=describe(segments, unit),
        unit=unit,
    )


def _segment(a: tuple[float, float], b: tuple[float, float]) -> Segment:
    slope = (math.log(b[1]) - math.log(a[1])) / (math.log(b[0]) - math.log(a[0]))
    return Segment(a[0], b[0], slope, words_for(slope))


def fmt_x(x: float, unit: str = "x") -> str:
    return f"{x:g}{unit}"


def describe(segments: Sequence[Segment], unit: str = "x") -> str:
    """Consecutive segments with the same word are one run: "sublinear up to 3x,
    superlinear at 8x"; one word throughout: "linear from 1x to 8x"."""
    if not segments:
        return ""
    runs: list[list[Segment]] = []
    for seg in segments:
        if runs and runs[-1][-1].words == seg.words:
            runs[-1].append(seg)
        else:
            runs.append([seg])
    if len(runs) == 1:
        first, last = fmt_x(segments[0].x_from, unit), fmt_x(segments[-1].x_to, unit)
        return f"{runs[0][0].words} from {first} to {last}"
    parts = [f"{runs[0][0].words} up to {fmt_x(runs[0][-1].x_to, unit)}"]
    for run in runs[1:]:
        if len(run) == 1:
            parts.append(f"{run[0].words} at {fmt_x(run[0].x_to, unit)}")
        else:
            parts.append(
                f"{run[0].words} from {fmt_x(run[0].x_from, unit)} to {fmt_x(run[-1].x_to, unit)}"
            )
    return ", ".join(parts)
