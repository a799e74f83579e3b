"""Render the status report with rich: the table, the header line, budget bars."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from coordinator.budget.rules import Budget, BudgetScope, BudgetUnit
from coordinator.status.rows import STYLES, StatusRow, counts, vs_median


@dataclass(frozen=True, slots=True)
class ReportOptions:
    budget_visuals: bool = True
    max_console_lines: int = 0
    max_line_length: int = 120


def header_line(title: str, elapsed_s: float, rows: Sequence[StatusRow]) -> str:
    c = counts(list(rows))
    order = (
        "running",
        "paused",
        "completed",
        "failed",
        "timeout",
        "blocked",
        "cancelled",
        "skipped",
        "lost",
        "pending",
    )
    parts = [f"{k} {c[k]}" for k in order if c.get(k)]
    return f"{title} · {fmt_duration(elapsed_s)} · " + " · ".join(parts)


def render_table(rows: Sequence[StatusRow]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for col, justify in (
        ("", "left"),
        ("instance", "left"),
        ("time", "right"),
        ("tokens", "right"),
        ("vs med", "right"),
        ("cache rd", "right"),
        ("tools", "right"),
        ("cost", "right"),
        ("progress", "right"),
        ("last event / reason", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=col != "last event / reason")  # type: ignore[arg-type]
    ratios = vs_median(list(rows))
    for row in rows:
        ratio = ratios[row.name]
        style = STYLES.get(row.status, "")
        wait = f" (+{fmt_duration(row.wait_s)} wait)" if row.wait_s >= 1 else ""
        table.add_row(
            Text(row.icon, style=style),
            Text(row.name_shown, style=style),
            fmt_duration(row.duration_s) + wait,
            f"{row.total_tokens:,}",
            f"{ratio:.2f}x" if ratio is not None else "-",
            f"{row.cache_read_tokens:,}",
            str(row.tool_calls),
            ("~" if row.cost_estimated else "") + f"${row.cost_usd:.4f}",
            f"{row.progress_pct:.0f}%",
            Text(row.last_event),  # stream text, not rich markup: "[/x]" must not raise
        )
    total = Totals.of(rows)
    table.add_row(
        "",
        Text("total", style="bold"),
        "",
        f"{total.tokens:,}",
        "",
        f"{total.cache_read:,}",
        str(total.tools),
        total.cost_text,
        "",
        "",
    )
    return table


def budget_bars(budgets: Sequence[Budget], width: int = 24) -> list[Text]:
    lines = []
    for budget in budgets:
        if budget.scope is BudgetScope.INSTANCE:
            continue
        pct = budget.pct
        filled = min(width, round(width * min(pct, 100.0) / 100))
        colour = "green" if pct < 80 else "yellow" if pct < 100 else "red"
        used = (
            f"{int(budget.used):,}/{int(budget.limit):,} tokens"
            if budget.unit is BudgetUnit.TOKENS
            else f"${budget.used:.4f}/${budget.limit:.4f}"
        )
        name = "overall" if budget.scope is BudgetScope.OVERALL else budget.target
        line = Text(f"budget {name:<16} ")
        line.append("█" * filled, style=colour)
        line.append("░" * (width - filled), style="dim")
        line.append(f" {pct:5.1f}%  {used}", style=colour)
        lines.append(line)
    return lines


def render_report(
    title: str,
    elapsed_s: float,
    rows: Sequence[StatusRow],
    budgets: Sequence[Budget],
    options: ReportOptions,
    extra: Sequence[str] = (),
) -> RenderableType:
    parts: list[RenderableType] = [Text(header_line(title, elapsed_s, rows), style="bold")]
    parts.append(render_table(rows))
    parts.extend(
        Text(line, style="yellow" if "warning" in line else "") for line in usage_lines(rows)
    )
    if options.budget_visuals:
        parts.extend(budget_bars(budgets))
    parts.extend(Text(line) for line in extra)
    if options.max_console_lines > 0:
        for row in rows:
            if row.status in ("running", "waiting", "starting") and row.output_tail:
                parts.append(Text(f"── {row.name}", style="dim"))
                for line in row.output_tail[-options.max_console_lines :]:
                    parts.append(Text("   " + line[: options.max_line_length], style="dim"))
    return Group(*parts)


def usage_lines(rows: Sequence[StatusRow]) -> list[str]:
    """``usage 5h 82% · 7d 40% · usage warning: ... (alpha, beta)``: one line per distinct
    account state seen (instances of one account share theirs), only when any is known."""
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    for row in rows:
        if row.usage is not None or row.usage_warning is not None:
            groups.setdefault((row.usage, row.usage_warning), []).append(row.name)
    lines = []
    for (usage, warning), names in groups.items():
        text = " · ".join(part for part in (usage, warning) if part)
        lines.append(f"usage {text} ({', '.join(names)})")
    return lines


def plain_lines(rows: Sequence[StatusRow]) -> list[str]:
    """The same facts as the table, one log line per instance (stdout is not a terminal)."""
    ratios = vs_median(list(rows))
    out = []
    for row in rows:
        ratio = ratios[row.name]
        wait = f" wait={fmt_duration(row.wait_s)}" if row.wait_s >= 1 else ""
        estimate = "~" if row.cost_estimated else ""
        out.append(
            f"{row.icon} {row.name_shown} status={row.status} time={fmt_duration(row.duration_s)}"
            f"{wait} tokens={row.total_tokens} "
            f"vs_median={'-' if ratio is None else f'{ratio:.2f}'} "
            f"cache_read={row.cache_read_tokens} tools={row.tool_calls} "
            f"cost={estimate}{row.cost_usd:.4f} progress={row.progress_pct:.0f}% "
            f"last={row.last_event!r}"
            + (f" usage={row.usage!r}" if row.usage else "")
            + (f" warning={row.usage_warning!r}" if row.usage_warning else "")
        )
    return out


def plain_totals(rows: Sequence[StatusRow]) -> str:
    """The totals row of the table, as one log line."""
    total = Totals.of(rows)
    return (
        f"total tokens={total.tokens} cache_read={total.cache_read} tools={total.tools} "
        f"cost={total.cost_text.replace('$', '')}"
    )


@dataclass(frozen=True, slots=True)
class Totals:
    """The totals row: sums over every instance; the cost is an estimate if any is."""

    tokens: int
    cache_read: int
    tools: int
    cost_usd: float
    estimated: bool

    @classmethod
    def of(cls, rows: Sequence[StatusRow]) -> Totals:
        return cls(
            tokens=sum(r.total_tokens for r in rows),
            cache_read=sum(r.cache_read_tokens for r in rows),
            tools=sum(r.tool_calls for r in rows),
            cost_usd=sum(r.cost_usd for r in rows),
            estimated=any(r.cost_estimated for r in rows),
        )

    @property
    def cost_text(self) -> str:
        return ("~" if self.estimated else "") + f"${self.cost_usd:.4f}"


def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if round(seconds, 1) < 60:  # 59.96 is "1m00s", not "60.0s"
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
