"""The HTML report: one self-contained file (plotly.js inlined, no network) with a timeline
of every instance (work, barrier waits, milestones, pauses), progress, tokens and cost over
time, per-scenario bars (quality, time, tokens, cost, memory) and the scaling chart with
its fits, above the comparison table and the recommendations.

Plotly's Python package builds and validates the figures and ships plotly.js, so nothing
comes from npm or a CDN. Every string from the run is escaped twice over: HTML-escaped
where the page shows it, and entity-escaped inside figures (plotly reads a subset of HTML
in its labels, so a name like ``<b>`` or ``<script>`` is shown as text, never parsed); the
figures' JSON sits in a ``<script type="application/json">`` with ``<``, ``>`` and ``&``
written as ``\\u003c`` ..., so nothing in it can close the element."""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from coordinator.report.compare import Comparison
from coordinator.report.facts import InstanceFacts, RunFacts, SeriesPoint
from coordinator.report.scaling import fmt_x
from coordinator.report.terminal import (
    NA,
    deltas,
    fmt_cost,
    fmt_met,
    fmt_num,
    fmt_secs,
    scaling_lines,
)

STATUS_COLOURS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "timeout": "#ef6c00",
    "blocked": "#6a1b9a",
    "cancelled": "#757575",
    "skipped": "#9e9e9e",
}
WAIT_COLOUR = "#ffb300"
CHARTS = ("timeline", "progress", "tokens", "scenarios", "scaling")
LINES_PER_INSTANCE_UP_TO = 20


def esc(text: object) -> str:
    """For the page: text and attribute values."""
    return html.escape(str(text), quote=True)


def label(text: object) -> str:
    """For plotly labels: plotly reads a subset of HTML in them and turns &lt; &gt; &amp;
    back into text (not &quot;, so quotes stay as they are: inert outside a tag)."""
    return html.escape(str(text), quote=False)


def _end_s(inst: InstanceFacts) -> float:
    return (inst.start_s or 0.0) + inst.duration_s


def timeline_figure(run: RunFacts) -> go.Figure:
    fig = go.Figure()
    names = [label(i.name) for i in run.instances]
    by_status: dict[str, list[tuple[str, InstanceFacts]]] = {}
    for inst, name in zip(run.instances, names, strict=True):
        by_status.setdefault(inst.status, []).append((name, inst))
    for status, members in by_status.items():  # one trace per status: any number of rows
        fig.add_trace(
            go.Bar(
                y=[n for n, _ in members],
                x=[i.duration_s for _, i in members],
                base=[i.start_s or 0.0 for _, i in members],
                orientation="h",
                name=label(status),
                marker={"color": STATUS_COLOURS.get(status, "#1565c0")},
                hovertext=[
                    f"{n}<br>{label(i.status)}<br>{fmt_secs(i.duration_s)} "
                    f"(wait {fmt_secs(i.wait_s)}, paused {fmt_secs(i.paused_s)})<br>"
                    f"{i.total_tokens:,} tokens, {fmt_cost(i.cost_usd)}"
                    for n, i in members
                ],
                hoverinfo="text",
                width=0.5,
            )
        )
    waits = [
        (label(i.name), w) for i in run.instances for w in i.sync_waits if w.start_s is not None
    ]
    if waits:
        fig.add_trace(
            go.Bar(
                y=[n for n, _ in waits],
                x=[w.waited_s for _, w in waits],
                base=[w.start_s for _, w in waits],
                orientation="h",
                name="sync wait",
                marker={"color": WAIT_COLOUR},
                width=0.3,
                hovertext=[
                    f"{n}: waited {w.waited_s:.1f} s at {label(w.point)}"
                    + (" (timed out)" if w.timed_out else "")
                    for n, w in waits
                ],
                hoverinfo="text",
            )
        )
    hits = [(label(i.name), m) for i in run.instances for m in i.milestones if m.at_s is not None]
    if hits:
        fig.add_trace(
            go.Scatter(
                y=[n for n, _ in hits],
                x=[m.at_s for _, m in hits],
                mode="markers+text",
                name="milestone",
                text=[f"{m.pct:g}%" for _, m in hits],
                textposition="top center",
                textfont={"size": 10},
                cliponaxis=False,
                marker={"symbol": "diamond", "size": 9, "color": "#263238"},
            )
        )
    paused = [(label(i.name), i) for i in run.instances if i.paused_s > 0]
    if paused:
        fig.add_trace(
            go.Scatter(
                y=[n for n, _ in paused],
                x=[_end_s(i) for _, i in paused],
                mode="markers+text",
                name="paused (total)",
                text=[f"paused {fmt_secs(i.paused_s)}" for _, i in paused],
                textposition="middle right",
                marker={"symbol": "square-open", "size": 10, "color": "#455a64"},
            )
        )
    fig.update_layout(
        title="Timeline: work, sync waits, milestones",
        barmode="overlay",
        xaxis_title="seconds since the run started",
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": names[::-1]},
        height=max(260, 80 + (44 if len(names) <= 40 else 12) * len(names)),
    )
    return fig


def _points(inst: InstanceFacts) -> list[SeriesPoint]:
    """Over time: the series it recorded, else its checkpoints, else start and end."""
    if inst.series:
        return list(inst.series)
    if inst.checkpoints:
        return list(inst.checkpoints)
    return [
        SeriesPoint(0.0, 0, 0.0, None, 0.0),
        SeriesPoint(inst.duration_s, inst.total_tokens, inst.cost_usd, None, inst.progress_pct),
    ]


def _line_groups(run: RunFacts) -> list[tuple[str, list[InstanceFacts]]]:
    """One line per instance in a small run; in a large one, one trace per scenario (its
    instances' lines joined by gaps), so the page stays light and the legend readable."""
    if len(run.instances) <= LINES_PER_INSTANCE_UP_TO:
        return [(i.name, [i]) for i in run.instances]
    groups: dict[str, list[InstanceFacts]] = {}
    for inst in run.instances:
        groups.setdefault(inst.group, []).append(inst)
    return list(groups.items())


def _joined(
    members: list[InstanceFacts], pick: Callable[[InstanceFacts], list[tuple[float, Any]]]
) -> tuple[list[float | None], list[Any], list[str]]:
    xs: list[float | None] = []
    ys: list[Any] = []
    names: list[str] = []
    for k, inst in enumerate(members):
        if k:
            xs.append(None)
            ys.append(None)
            names.append("")
        for x, y in pick(inst):
            xs.append(x)
            ys.append(y)
            names.append(label(inst.name))
    return xs, ys, names


def _progress_points(inst: InstanceFacts) -> list[tuple[float, Any]]:
    start = inst.start_s or 0.0
    raw: list[tuple[float, float | None]]
    if inst.series or inst.checkpoints:
        raw = [(start + p.t_s, p.progress_pct) for p in _points(inst)]
    else:
        raw = [(start, 0.0)]
        raw += [(m.at_s, m.pct) for m in inst.milestones if m.at_s is not None]
        raw.append((_end_s(inst), inst.progress_pct))
    return [(t, v) for t, v in raw if v is not None]


def _line_trace(
    name: str, joined: tuple[list[float | None], list[Any], list[str]], **style: Any
) -> go.Scatter:
    """One group's line over time: ``joined`` is what :func:`_joined` returns."""
    xs, ys, names = joined
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines+markers",
        name=label(name),
        hovertext=names,
        hoverinfo="text+x+y",
        **style,
    )


def progress_figure(run: RunFacts) -> go.Figure:
    fig = go.Figure()
    for name, members in _line_groups(run):
        fig.add_trace(_line_trace(name, _joined(members, _progress_points), line={"shape": "hv"}))
    fig.update_layout(
        title="Progress over time",
        xaxis_title="seconds since the run started",
        yaxis={"title": "progress %", "range": [0, 105]},
        height=360,
    )
    return fig


def tokens_figure(run: RunFacts) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens", "cost (USD)"))
    for k, (name, members) in enumerate(_line_groups(run)):
        colour = f"hsl({(k * 67) % 360},60%,45%)"
        for col, attr in enumerate(("total_tokens", "cost_usd"), 1):

            def pick(inst: InstanceFacts, attr: str = attr) -> list[tuple[float, Any]]:
                start = inst.start_s or 0.0
                return [
                    (start + p.t_s, getattr(p, attr))
                    for p in _points(inst)
                    if getattr(p, attr) is not None
                ]

            trace = _line_trace(
                name,
                _joined(members, pick),
                legendgroup=label(name),
                showlegend=col == 1,
                line={"color": colour},
            )
            fig.add_trace(trace, row=1, col=col)
    fig.update_xaxes(title_text="seconds since the run started")
    fig.update_layout(title="Tokens and cost over time", height=380)
    return fig


def scenarios_figure(comp: Comparison) -> go.Figure:
    panels = (
        ("quality", "quality", ".2f"),
        ("time_s", "time per item (s)", ".1f"),
        ("tokens_per_item", "tokens per item", ",.0f"),
        ("cost_per_item", "cost per item (USD)", ".4f"),
        ("peak_mb", "peak memory (MB)", ".0f"),
    )
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels])
    names = [label(s.name) for s in comp.scenarios]
    for col, (attr, _title, fmt) in enumerate(panels, 1):
        values = [getattr(s, attr) for s in comp.scenarios]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[v if v is not None else 0 for v in values],
                text=[NA if v is None else format(v, fmt) for v in values],
                textposition="outside",
                cliponaxis=False,
                name=_title,
                showlegend=False,
                marker={
                    "color": [
                        "#c62828" if attr == "quality" and s.met is False else "#1565c0"
                        for s in comp.scenarios
                    ]
                },
            ),
            row=1,
            col=col,
        )
        if attr == "quality":
            expected = [s.expected_quality for s in comp.scenarios]
            if any(e is not None for e in expected):
                fig.add_trace(
                    go.Scatter(
                        x=names,
                        y=expected,
                        mode="markers",
                        name="expected quality",
                        marker={"symbol": "line-ew-open", "size": 28, "color": "#000"},
                    ),
                    row=1,
                    col=col,
                )
    fig.update_layout(title="Per scenario", height=420, margin={"t": 110})
    return fig


def scaling_figure(comp: Comparison) -> go.Figure:
    """Each metric relative to its first tier, on log-log axes, with its fit and y = x."""
    fig = go.Figure()
    xs: list[float] = []
    for metric, fit in comp.scaling.items():
        if fit is None:
            continue
        x0, y0 = fit.points[0]
        xs += [x for x, _ in fit.points]
        label = {"time_s": "time", "tokens": "tokens", "cost_usd": "cost"}[metric]
        fig.add_trace(
            go.Scatter(
                x=[x / x0 for x, _ in fit.points],
                y=[y / y0 for _, y in fit.points],
                mode="markers",
                name=f"{label} (measured)",
                marker={"size": 11},
                legendgroup=label,
            )
        )
        lo, hi = fit.points[0][0], fit.points[-1][0]
        grid = [lo * (hi / lo) ** (k / 20) for k in range(21)]
        fig.add_trace(
            go.Scatter(
                x=[x / x0 for x in grid],
                y=[fit.predict(x) / fit.predict(x0) for x in grid],
                mode="lines",
                line={"dash": "dash"},
                name=f"{label} fit: x^{fit.exponent:.2f} ({fit.words})",
                legendgroup=label,
            )
        )
    if xs:
        lo, hi = 1.0, max(xs) / min(xs)
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="linear (y = x)",
                line={"color": "#9e9e9e", "dash": "dot"},
            )
        )
    axis = "input size" if comp.x_axis == "input_size" else "complexity multiplier"
    fig.update_layout(
        title="Scaling: growth relative to the first tier (log-log)",
        xaxis={"type": "log", "title": f"{axis} (relative)"},
        yaxis={"type": "log", "title": "relative to the first tier"},
        height=420,
    )
    return fig


def versus_figure(a: Comparison, b: Comparison) -> go.Figure:
    """Two runs side by side: per scenario, A's and B's bars for each figure."""
    panels = (
        ("quality", "quality", ".2f"),
        ("time_s", "time per item (s)", ".1f"),
        ("tokens_per_item", "tokens per item", ",.0f"),
        ("cost_per_item", "cost per item (USD)", ".4f"),
    )
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels])
    names = [s.name for s in a.scenarios] + [
        s.name for s in b.scenarios if s.name not in {x.name for x in a.scenarios}
    ]
    for run_label, comp, colour in (("A", a, "#90a4ae"), ("B", b, "#1565c0")):
        by = {s.name: s for s in comp.scenarios}
        for col, (attr, _title, fmt) in enumerate(panels, 1):
            values = [getattr(by[n], attr) if n in by else None for n in names]
            fig.add_trace(
                go.Bar(
                    x=[label(n) for n in names],
                    y=[v if v is not None else 0 for v in values],
                    text=[NA if v is None else format(v, fmt) for v in values],
                    textposition="outside",
                    cliponaxis=False,
                    name=f"{run_label}: {label(comp.orchestration_id)}",
                    legendgroup=run_label,
                    showlegend=col == 1,
                    marker={"color": colour},
                ),
                row=1,
                col=col,
            )
    fig.update_layout(title="A and B side by side", barmode="group", height=420, margin={"t": 110})
    return fig


def figures(run: RunFacts, comp: Comparison, other: Comparison | None = None) -> dict[str, Any]:
    figs = {
        "timeline": timeline_figure(run),
        "progress": progress_figure(run),
        "tokens": tokens_figure(run),
        "scenarios": scenarios_figure(comp),
        "scaling": scaling_figure(comp),
    }
    if other is not None:
        figs = {"versus": versus_figure(comp, other), **figs}
    out = {}
    for key, fig in figs.items():
        fig.update_layout(template="plotly_white", font={"family": "sans-serif"})
        out[f"chart-{key}"] = fig.to_plotly_json()
    return out


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: no '<', '>' or '&' in it at all."""
    text = orjson.dumps(value).decode()
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _table(comp: Comparison) -> str:
    head = (
        "scenario",
        "x",
        "items",
        "done",
        "tokens/item",
        "cost/item",
        "time/item",
        "wait/item",
        "peak MB",
        "quality",
        "expected",
        "met",
    )
    rows = []
    for s in comp.scenarios:
        x = s.input_size if comp.x_axis == "input_size" else s.complexity_multiplier
        cells = (
            s.name,
            NA if x is None else fmt_x(x, "" if comp.x_axis == "input_size" else "x"),
            s.items,
            s.completed,
            fmt_num(s.tokens_per_item),
            fmt_cost(s.cost_per_item),
            fmt_secs(s.time_s),
            fmt_secs(s.wait_s),
            fmt_num(s.peak_mb),
            fmt_num(s.quality, ".2f"),
            fmt_num(s.expected_quality, ".2f"),
            fmt_met(s.met),
        )
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return (
        '<table id="comparison"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _instances_table(run: RunFacts) -> str:
    head = (
        "instance",
        "scenario",
        "status",
        "tokens",
        "cost",
        "duration",
        "wait",
        "quality",
        "peak MB",
        "description",
    )
    rows = []
    for i in run.instances:
        cells = (
            i.name,
            i.group,
            i.status,
            f"{i.total_tokens:,}",
            fmt_cost(i.cost_usd),
            fmt_secs(i.duration_s),
            fmt_secs(i.wait_s),
            fmt_num(i.quality, ".2f"),
            fmt_num(i.peak_mb),
            i.description,
        )
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return (
        '<table id="instances"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


STYLE = """
body { font-family: sans-serif; margin: 24px; color: #212121; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; } thead { border-bottom: 1px solid #999; }
.chart { width: 100%; min-height: 260px; } .meta { color: #616161; }
"""

DRAW = """
(function () {
  var figs = JSON.parse(document.getElementById("report-data").textContent);
  Object.keys(figs).forEach(function (id) {
    var fig = figs[id];
    Plotly.newPlot(id, fig.data, fig.layout, {displaylogo: false, responsive: true})
      .then(function () { document.getElementById(id).setAttribute("data-drawn", "1"); });
  });
})();
"""


def _versus_table(a: Comparison, b: Comparison) -> str:
    head = (
        "scenario",
        "tokens/item A",
        "B",
        "Δ",
        "cost/item A",
        "B",
        "Δ",
        "time/item A",
        "B",
        "Δ",
        "quality A",
        "B",
        "Δ",
        "met A",
        "B",
    )
    rows = []
    for row in deltas(a, b):
        cells: list[str] = [row["scenario"]]
        shown: tuple[tuple[str, Callable[[Any], str], str], ...] = (
            ("tokens_per_item", fmt_num, "+,.0f"),
            ("cost_per_item", fmt_cost, "+.4f"),
            ("time_s", fmt_secs, "+.1f"),
            ("quality", lambda v: fmt_num(v, ".2f"), "+.2f"),
        )
        for key, fmt, delta_fmt in shown:
            cell = row[key]
            delta = cell["delta"]
            shown_delta = NA if delta is None else format(delta, delta_fmt)
            cells += [fmt(cell["a"]), fmt(cell["b"]), shown_delta]
        cells += [fmt_met(row["met"]["a"]), fmt_met(row["met"]["b"])]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return (
        '<table id="versus"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def render_html(run: RunFacts, comp: Comparison, other: Comparison | None = None) -> str:
    """The page of ``run``; with ``other``, B of a comparison, the two side by side first."""
    figs = figures(run, comp, other)
    data = script_json(figs)
    recs = "".join(
        f"<li><b>{esc(r.text)}</b>" + (f": {esc(r.reason)}" if r.reason else "") + "</li>"
        for r in comp.recommendations
    )
    scaling = "".join(f"<li>{esc(line)}</li>" for line in scaling_lines(comp))
    meta = ", ".join(
        part
        for part in (
            f"status {run.status}" if run.status else "",
            f"started {run.started_at}" if run.started_at else "",
            f"{len(run.instances)} instances",
        )
        if part
    )
    charts = "".join(f'<div id="{key}" class="chart"></div>' for key in figs)
    versus = (
        f"<h2>Compared with B: {esc(other.orchestration_id)}</h2>{_versus_table(comp, other)}"
        if other is not None
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>coordinator report {esc(run.orchestration_id)}</title>"
        f"<style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<h1>Scenario comparison: {esc(run.orchestration_id)}</h1>"
        f'<p class="meta">{esc(meta)}</p>'
        f"{_table(comp)}"
        f'<h2>Scaling</h2><ul id="scaling">{scaling}</ul>'
        f'<h2>Recommendations</h2><ul id="recommendations">{recs}</ul>'
        f"{versus}{charts}"
        f"<h2>Instances</h2>{_instances_table(run)}"
        f'<script type="application/json" id="report-data">{data}</script>'
        f"<script>{DRAW}</script></body></html>\n"
    )


def write_html_report(
    path: Path, run: RunFacts, comp: Comparison, other: Comparison | None = None
) -> Path:
    """Written atomically (a half page never replaces a whole one)."""
    text = render_html(run, comp, other)
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
