"""The comparison of a run's scenarios (tiers): per scenario its items, tokens, cost, time,
wait, peak memory and quality against its expectation; the quality comparison; scaling of
time, tokens and cost against the complexity multiplier (or the input size); efficiency;
recommendations with their reasons. Pure: RunFacts in, Comparison out.

A scenario is the instances of one ``difficulty`` (an instance without one is a scenario
of its own). Per-item figures are means over its instances; time is working time (the
duration less barrier waits and pauses, which the sync imposes, not the tier)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.report.facts import InstanceFacts, RunFacts
from coordinator.report.scaling import Fit, fit_power_law, fmt_x

COMPARISON_VERSION = 1
SCALED = ("time_s", "tokens", "cost_usd")  # what the scaling analysis fits
# A bottleneck is named when something used at least this share of what it may use.
PRESSURE_NOTED = 0.5
GROWS = {"time_s": "time grows", "tokens": "tokens grow", "cost_usd": "cost grows"}


@dataclass(frozen=True, slots=True)
class ScenarioSummary:
    name: str
    instances: tuple[str, ...]
    items: int
    completed: int
    statuses: dict[str, int]
    complexity_multiplier: float | None
    input_size: float | None
    tokens: int  # over its instances
    cost_usd: float
    time_s: float  # working seconds per item (mean)
    duration_s: float  # wall seconds per item (mean), waits included
    wait_s: float  # per item (mean)
    paused_s: float
    tool_calls: int  # over its instances
    tokens_per_item: float
    cost_per_item: float
    peak_mb: float | None  # the largest over its instances
    memory_limit_mb: float | None
    time_budget_s: float | None
    over_time_budget: int  # items whose working time passed the scenario's time budget
    quality: float | None  # mean score over the items that measured one
    expected_quality: float | None
    met: bool | None  # every measured item met the expectation (None: nothing to say)
    quality_detail: str | None
    quality_per_minute: float | None
    quality_per_usd: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instances": list(self.instances),
            "items": self.items,
            "completed": self.completed,
            "statuses": self.statuses,
            "complexity_multiplier": self.complexity_multiplier,
            "input_size": self.input_size,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "time_s": round(self.time_s, 3),
            "duration_s": round(self.duration_s, 3),
            "wait_s": round(self.wait_s, 3),
            "paused_s": round(self.paused_s, 3),
            "tool_calls": self.tool_calls,
            "tokens_per_item": round(self.tokens_per_item, 1),
            "cost_per_item": round(self.cost_per_item, 6),
            "peak_mb": self.peak_mb,
            "memory_limit_mb": self.memory_limit_mb,
            "time_budget_s": self.time_budget_s,
            "over_time_budget": self.over_time_budget,
            "quality": _round(self.quality, 4),
            "expected_quality": self.expected_quality,
            "met": self.met,
            "quality_detail": self.quality_detail,
            "efficiency": {
                "quality_per_minute": _round(self.quality_per_minute, 4),
                "quality_per_usd": _round(self.quality_per_usd, 4),
            },
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    kind: str  # best_value | missed_expectation | not_completed | bottleneck | no_quality
    scenario: str | None
    text: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scenario": self.scenario,
            "text": self.text,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    orchestration_id: str
    scenarios: tuple[ScenarioSummary, ...]
    x_axis: str | None  # complexity_multiplier | input_size | None (nothing to scale on)
    scaling: dict[str, Fit | None]
    quality: dict[str, Any]
    recommendations: tuple[Recommendation, ...]
    bottleneck: str | None  # time | tokens | memory | wait
    notes: tuple[str, ...] = field(default_factory=tuple)

    def scenario(self, name: str) -> ScenarioSummary:
        return next(s for s in self.scenarios if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": COMPARISON_VERSION,
            "orchestration_id": self.orchestration_id,
            "scenarios": [s.as_dict() for s in self.scenarios],
            "quality": self.quality,
            "scaling": {
                "x": self.x_axis,
                "thresholds": {"sublinear_below": 0.9, "superlinear_above": 1.1},
                **{k: (f.as_dict() if f is not None else None) for k, f in self.scaling.items()},
            },
            "recommendations": [r.as_dict() for r in self.recommendations],
            "bottleneck": self.bottleneck,
            "notes": list(self.notes),
        }


def _round(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _same(values: Sequence[float | None]) -> float | None:
    """The value the items share (the mean if they differ), None if none has one."""
    known = [v for v in values if v is not None]
    return _mean(known) if known else None


def summarise(name: str, items: Sequence[InstanceFacts]) -> ScenarioSummary:
    n = len(items)
    statuses: dict[str, int] = {}
    for i in items:
        statuses[i.status] = statuses.get(i.status, 0) + 1
    measured = [i for i in items if i.quality is not None]
    quality = _mean([i.quality for i in measured if i.quality is not None]) if measured else None
    judged = [i.quality_met for i in items if i.quality_met is not None]
    met = all(judged) if judged else None
    expected = _same([i.expected_quality for i in items])
    tokens = sum(i.total_tokens for i in items)
    cost = sum(i.cost_usd for i in items)
    time_s = _mean([i.work_s for i in items])
    budget = _same([i.time_budget_s for i in items])
    over = sum(
        1
        for i in items
        if i.time_exceeded_at_s is not None
        or (i.time_budget_s is not None and i.work_s > i.time_budget_s)
    )
    peaks = [i.peak_mb for i in items if i.peak_mb is not None]
    limits = [i.memory_limit_mb for i in items if i.memory_limit_mb is not None]
    details = [i.quality_detail for i in items if i.quality_detail]
    return ScenarioSummary(
        name=name,
        instances=tuple(i.name for i in items),
        items=n,
        completed=statuses.get("completed", 0),
        statuses=statuses,
        complexity_multiplier=_same([i.complexity_multiplier for i in items]),
        input_size=_same([i.input_size for i in items]),
        tokens=tokens,
        cost_usd=cost,
        time_s=time_s,
        duration_s=_mean([i.duration_s for i in items]),
        wait_s=_mean([i.wait_s for i in items]),
        paused_s=_mean([i.paused_s for i in items]),
        tool_calls=sum(i.tool_calls for i in items),
        tokens_per_item=tokens / n if n else 0.0,
        cost_per_item=cost / n if n else 0.0,
        peak_mb=max(peaks) if peaks else None,
        memory_limit_mb=min(limits) if limits else None,
        time_budget_s=budget,
        over_time_budget=over,
        quality=quality,
        expected_quality=expected,
        met=met,
        quality_detail="; ".join(details) if len(details) == 1 else None,
        quality_per_minute=quality / (time_s / 60) if quality is not None and time_s > 0 else None,
        quality_per_usd=(quality / (cost / n)) if quality is not None and cost > 0 else None,
    )


def group(instances: Sequence[InstanceFacts]) -> dict[str, list[InstanceFacts]]:
    groups: dict[str, list[InstanceFacts]] = {}
    for inst in instances:
        groups.setdefault(inst.group, []).append(inst)
    return groups


def choose_x(scenarios: Sequence[ScenarioSummary]) -> str | None:
    """The complexity multiplier when the tiers differ in it, else their input size."""
    mult = {s.complexity_multiplier for s in scenarios if s.complexity_multiplier is not None}
    if len(mult) >= 2:
        return "complexity_multiplier"
    size = {s.input_size for s in scenarios if s.input_size is not None}
    if len(size) >= 2:
        return "input_size"
    return None


def _x(s: ScenarioSummary, axis: str) -> float | None:
    return s.complexity_multiplier if axis == "complexity_multiplier" else s.input_size


def compare(run: RunFacts) -> Comparison:
    groups = group(run.instances)
    scenarios = tuple(
        sorted(
            (summarise(name, items) for name, items in groups.items()),
            key=lambda s: (
                s.complexity_multiplier if s.complexity_multiplier is not None else float("inf"),
                s.name,
            ),
        )
    )
    axis = choose_x(scenarios)
    scaling: dict[str, Fit | None] = {}
    notes: list[str] = []
    if axis is not None:
        for metric in SCALED:
            points = [
                (x, float(getattr(s, _per_item(metric))))
                for s in scenarios
                if (x := _x(s, axis)) is not None
            ]
            unit = "x" if axis == "complexity_multiplier" else ""  # "3x", else a size "30"
            scaling[metric] = fit_power_law(metric, points, unit=unit)
    else:
        notes.append("no scaling analysis: the scenarios do not differ in complexity or size")
    quality = _quality_comparison(scenarios)
    recs, bottleneck = recommend(scenarios, scaling, run.instances)
    return Comparison(
        orchestration_id=run.orchestration_id,
        scenarios=scenarios,
        x_axis=axis,
        scaling=scaling,
        quality=quality,
        recommendations=tuple(recs),
        bottleneck=bottleneck,
        notes=tuple(notes),
    )


def _per_item(metric: str) -> str:
    return {"time_s": "time_s", "tokens": "tokens_per_item", "cost_usd": "cost_per_item"}[metric]


def _quality_comparison(scenarios: Sequence[ScenarioSummary]) -> dict[str, Any]:
    measured = [s for s in scenarios if s.quality is not None]
    ranked = sorted(measured, key=lambda s: (-(s.quality or 0.0), s.name))
    return {
        "measured": len(measured),
        "ranking": [s.name for s in ranked],
        "best": ranked[0].name if ranked else None,
        "worst": ranked[-1].name if ranked else None,
        "met": [s.name for s in scenarios if s.met is True],
        "missed": [s.name for s in scenarios if s.met is False],
        "spread": round((ranked[0].quality or 0) - (ranked[-1].quality or 0), 4)
        if ranked
        else None,
    }


# ------------------------------------------------------------------ recommendations


def _fmt_q(q: float | None) -> str:
    return "n/a" if q is None else f"{q:.2f}"


def recommend(
    scenarios: Sequence[ScenarioSummary],
    scaling: dict[str, Fit | None],
    instances: Sequence[InstanceFacts],
) -> tuple[list[Recommendation], str | None]:
    recs: list[Recommendation] = []
    valued = [s for s in scenarios if s.quality is not None and s.met is not False]
    if valued:
        best = max(
            valued,
            key=lambda s: (
                s.quality_per_usd if s.quality_per_usd is not None else float("inf"),
                s.quality or 0.0,
            ),
        )
        per_usd = (
            f"{best.quality_per_usd:,.1f} quality per dollar"
            if best.quality_per_usd is not None
            else "no cost"
        )
        others = [s.name for s in valued if s is not best]
        recs.append(
            Recommendation(
                "best_value",
                best.name,
                f"best tier for the money: {best.name}",
                f"quality {_fmt_q(best.quality)} at ${best.cost_per_item:.4f} per item "
                f"({per_usd}"
                + (f"; ahead of {', '.join(others)}" if others else "")
                + (f"; meets its expected {_fmt_q(best.expected_quality)}" if best.met else "")
                + ")",
            )
        )
    elif any(s.quality is not None for s in scenarios):
        recs.append(
            Recommendation(
                "best_value",
                None,
                "no tier met its expected quality",
                "every measured tier fell short; see the missed expectations",
            )
        )
    else:
        recs.append(
            Recommendation(
                "no_quality",
                None,
                "no quality measured",
                "add a verify block so the tiers can be ranked by value",
            )
        )
    for s in scenarios:
        if s.met is False:
            detail = f" ({s.quality_detail})" if s.quality_detail else ""
            recs.append(
                Recommendation(
                    "missed_expectation",
                    s.name,
                    f"{s.name} missed its expected quality",
                    f"quality {_fmt_q(s.quality)}{detail} against an expected "
                    f"{_fmt_q(s.expected_quality)}",
                )
            )
        if s.completed < s.items:
            ended = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()) if k != "completed")
            recs.append(
                Recommendation(
                    "not_completed",
                    s.name,
                    f"{s.name}: {s.items - s.completed} of {s.items} did not complete",
                    ended,
                )
            )
    bottleneck, reason = find_bottleneck(scenarios, scaling, instances)
    if bottleneck is not None:
        recs.append(Recommendation("bottleneck", None, f"bottleneck: {bottleneck}", reason))
    return recs, bottleneck


def find_bottleneck(
    scenarios: Sequence[ScenarioSummary],
    scaling: dict[str, Fit | None],
    instances: Sequence[InstanceFacts],
) -> tuple[str | None, str]:
    """What limits the run: the resource nearest its limit (time against the time budget,
    memory against its limit, waiting against the wall time), when one used at least half
    of it; else what grows fastest with complexity (the largest scaling exponent)."""
    pressures: list[tuple[float, str, str]] = []
    for s in scenarios:
        if s.time_budget_s:
            share = s.time_s / s.time_budget_s
            pressures.append(
                (
                    share,
                    "time",
                    f"{s.name} used {share:.0%} of its {s.time_budget_s:g} s time budget",
                )
            )
        if s.peak_mb is not None and s.memory_limit_mb:
            share = s.peak_mb / s.memory_limit_mb
            pressures.append(
                (
                    share,
                    "memory",
                    f"{s.name} peaked at {s.peak_mb:.0f} MB of its {s.memory_limit_mb:g} MB limit",
                )
            )
    wall = sum(i.duration_s for i in instances)
    waited = sum(i.wait_s for i in instances)
    if wall > 0 and waited > 0:
        share = waited / wall
        pressures.append(
            (share, "wait", f"{share:.0%} of the instances' time went on waiting at barriers")
        )
    if pressures:
        share, what, reason = max(pressures, key=lambda p: p[0])
        if share >= PRESSURE_NOTED:
            return what, reason
    fits = [(f.exponent, m, f) for m, f in scaling.items() if f is not None]
    if fits:
        exponent, metric, fit = max(fits, key=lambda t: t[0])
        what = {"time_s": "time", "tokens": "tokens", "cost_usd": "tokens"}[metric]
        first, last = fit.points[0], fit.points[-1]
        return what, (
            f"{GROWS[metric]} fastest with complexity: "
            f"exponent {exponent:.2f} ({fit.words}), {last[1] / first[1]:.1f}x from "
            f"{fmt_x(first[0], fit.unit)} to {fmt_x(last[0], fit.unit)}"
        )
    return None, ""
