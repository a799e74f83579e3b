"""The comparison in the terminal: the per-scenario table, the scaling lines and the
recommendations (``coordinator report``, and compactly at the end of every run), and two
runs side by side with their deltas (``--compare``). Text from the run is never markup."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from coordinator.report.compare import Comparison, ScenarioSummary
from coordinator.report.scaling import fmt_x

NA = "n/a"


def fmt_num(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return NA if value is None else f"{value:{spec}}{suffix}"


def fmt_cost(value: float | None) -> str:
    return NA if value is None else f"${value:.4f}"


def fmt_secs(value: float | None) -> str:
    if value is None:
        return NA
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s"


def fmt_met(met: bool | None) -> str:
    return NA if met is None else ("yes" if met else "NO")


def _x(s: ScenarioSummary, axis: str | None) -> str:
    value = s.input_size if axis == "input_size" else s.complexity_multiplier
    return NA if value is None else fmt_x(value, "" if axis == "input_size" else "x")


def scenario_table(comp: Comparison, *, compact: bool = False) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    columns = ["scenario", "x", "items", "done", "tokens/item", "cost/item", "time/item"]
    if not compact:
        columns += ["wait/item"]
    columns += ["peak MB", "quality", "expected", "met"]
    for col in columns:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for s in comp.scenarios:
        cells: list[Text | str] = [
            Text(s.name),
            _x(s, comp.x_axis),
            str(s.items),
            str(s.completed),
            fmt_num(s.tokens_per_item),
            fmt_cost(s.cost_per_item),
            fmt_secs(s.time_s),
        ]
        if not compact:
            cells.append(fmt_secs(s.wait_s))
        cells += [
            fmt_num(s.peak_mb),
            fmt_num(s.quality, ".2f"),
            fmt_num(s.expected_quality, ".2f"),
            fmt_met(s.met),
        ]
        table.add_row(*cells)
    return table


def scaling_lines(comp: Comparison) -> list[str]:
    if comp.x_axis is None:
        return list(comp.notes)
    lines = []
    axis = "complexity" if comp.x_axis == "complexity_multiplier" else "input size"
    for metric, fit in comp.scaling.items():
        label = {"time_s": "time", "tokens": "tokens", "cost_usd": "cost"}[metric]
        if fit is None:
            lines.append(f"{label} vs {axis}: {NA} (needs two tiers with values above 0)")
            continue
        lines.append(f"{label} vs {axis}: exponent {fit.exponent:.2f} ({fit.words}); {fit.summary}")
    return lines


def render_comparison(comp: Comparison, *, compact: bool = False) -> RenderableType:
    parts: list[RenderableType] = [
        Text(f"Scenario comparison ({comp.orchestration_id})", style="bold"),
        scenario_table(comp, compact=compact),
    ]
    parts += [Text(line) for line in scaling_lines(comp)]
    for rec in comp.recommendations:
        if compact and rec.kind == "no_quality":
            continue
        parts.append(Text(f"- {rec.text}: {rec.reason}" if rec.reason else f"- {rec.text}"))
    return Group(*parts)


# ------------------------------------------------------------------ two runs


def _delta(a: float | None, b: float | None, fmt: str = ",.0f", pct: bool = True) -> str:
    if a is None or b is None:
        return NA
    diff = b - a
    text = f"{diff:+{fmt}}"
    if pct and a:
        text += f" ({diff / a:+.0%})"
    return text


def deltas(a: Comparison, b: Comparison) -> list[dict[str, Any]]:
    """Per scenario (in either run): A's and B's figures and B - A."""
    names = [s.name for s in a.scenarios] + [
        s.name for s in b.scenarios if s.name not in {x.name for x in a.scenarios}
    ]
    by_a = {s.name: s for s in a.scenarios}
    by_b = {s.name: s for s in b.scenarios}
    out = []
    for name in names:
        sa, sb = by_a.get(name), by_b.get(name)
        row: dict[str, Any] = {"scenario": name}
        for key in ("tokens_per_item", "cost_per_item", "time_s", "quality", "peak_mb"):
            va = getattr(sa, key) if sa else None
            vb = getattr(sb, key) if sb else None
            row[key] = {
                "a": va,
                "b": vb,
                "delta": (vb - va) if va is not None and vb is not None else None,
            }
        row["met"] = {"a": sa.met if sa else None, "b": sb.met if sb else None}
        out.append(row)
    return out


def render_two(a: Comparison, b: Comparison) -> RenderableType:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in (
        "scenario",
        "tokens/item",
        "Δ",
        "cost/item",
        "Δ",
        "time/item",
        "Δ",
        "quality",
        "Δ",
        "met",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for row in deltas(a, b):
        t, c, s, q = row["tokens_per_item"], row["cost_per_item"], row["time_s"], row["quality"]
        table.add_row(
            Text(row["scenario"]),
            f"{fmt_num(t['a'])} → {fmt_num(t['b'])}",
            _delta(t["a"], t["b"]),
            f"{fmt_cost(c['a'])} → {fmt_cost(c['b'])}",
            _delta(c["a"], c["b"], ".4f"),
            f"{fmt_secs(s['a'])} → {fmt_secs(s['b'])}",
            _delta(s["a"], s["b"], ".1f"),
            f"{fmt_num(q['a'], '.2f')} → {fmt_num(q['b'], '.2f')}",
            _delta(q["a"], q["b"], ".2f", pct=False),
            f"{fmt_met(row['met']['a'])} → {fmt_met(row['met']['b'])}",
        )
    parts: list[RenderableType] = [
        Text(f"A: {a.orchestration_id}   B: {b.orchestration_id}", style="bold"),
        table,
    ]
    for metric in ("time_s", "tokens", "cost_usd"):
        fa, fb = a.scaling.get(metric), b.scaling.get(metric)
        if fa is None and fb is None:
            continue
        label = {"time_s": "time", "tokens": "tokens", "cost_usd": "cost"}[metric]
        ea = f"{fa.exponent:.2f} ({fa.words})" if fa else NA
        eb = f"{fb.exponent:.2f} ({fb.words})" if fb else NA
        parts.append(Text(f"{label} exponent: {ea} → {eb}"))
    return Group(*parts)
