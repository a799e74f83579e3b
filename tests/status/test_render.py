"""The status report as rich draws it: every column, the totals, the header, budget bars,
output tails, the plain log lines, durations."""

from __future__ import annotations

import re

import pytest
from rich.text import Text

from coordinator.budget.rules import Budget, BudgetScope, BudgetUnit
from coordinator.status.render import (
    ReportOptions,
    budget_bars,
    fmt_duration,
    header_line,
    plain_lines,
    plain_totals,
    render_report,
)
from coordinator.status.rows import StatusRow
from tests.status.helpers import line_for, lines_of, render_plain, row

HEADERS = [
    "instance",
    "time",
    "tokens",
    "vs med",
    "cache rd",
    "tools",
    "cost",
    "progress",
    "last event / reason",
]


def cells(line: str) -> list[str]:
    """Table cells of one line: columns are at least two spaces apart."""
    return re.split(r"\s{2,}", line.strip())


def three_rows() -> list[StatusRow]:
    return [
        row(
            name="alpha",
            status="completed",
            duration_s=65,
            total_tokens=1000,
            cache_read_tokens=300,
            tool_calls=2,
            cost_usd=0.0125,
            progress_pct=100,
            last_event="completed",
        ),
        row(
            name="beta",
            status="running",
            duration_s=12.34,
            total_tokens=2000,
            cache_read_tokens=1500,
            tool_calls=7,
            cost_usd=0.5,
            cost_estimated=True,
            progress_pct=42.4,
            last_event="auth error, retry 3/10",
        ),
        row(
            name="gamma",
            status="failed",
            duration_s=3725,
            total_tokens=5000,
            tool_calls=1,
            cost_usd=1.25,
            progress_pct=10,
            last_event="permission denied: Bash",
        ),
    ]


def report(rows: list[StatusRow], options: ReportOptions | None = None, **kw: object) -> str:
    return render_plain(
        render_report("coordinator t", 65, rows, [], options or ReportOptions(), **kw)  # type: ignore[arg-type]
    )


def test_every_column_of_every_row() -> None:
    text = report(three_rows())
    header = next(line for line in lines_of(text) if "instance" in line)
    assert cells(header) == HEADERS
    # median tokens of 1,000 / 2,000 / 5,000 is 2,000: 0.50x, 1.00x, 2.50x
    assert cells(line_for(text, "alpha")) == [
        "✓",
        "alpha",
        "1m05s",
        "1,000",
        "0.50x",
        "300",
        "2",
        "$0.0125",
        "100%",
        "completed",
    ]
    assert cells(line_for(text, "beta")) == [
        "▶",
        "beta",
        "12.3s",
        "2,000",
        "1.00x",
        "1,500",
        "7",
        "~$0.5000",  # estimated until the CLI reports the cost
        "42%",
        "auth error, retry 3/10",
    ]
    assert cells(line_for(text, "gamma")) == [
        "✗",
        "gamma",
        "1h02m",
        "5,000",
        "2.50x",
        "0",
        "1",
        "$1.2500",
        "10%",
        "permission denied: Bash",
    ]


def test_totals_row_sums_and_marks_an_estimate() -> None:
    text = report(three_rows())
    assert cells(line_for(text, "total")) == ["total", "8,000", "1,800", "10", "~$1.7625"]
    exact = [r for r in three_rows() if not r.cost_estimated]
    text = report(exact)
    assert cells(line_for(text, "total")) == ["total", "6,000", "300", "3", "$1.2625"]


def test_vs_median_even_count_and_nothing_used_yet() -> None:
    rows = [
        row(name="a", total_tokens=100),
        row(name="b", total_tokens=300),
        row(name="c", total_tokens=0, status="pending"),  # not in the median
    ]
    text = report(rows)
    # median of 100 and 300 is 200
    assert cells(line_for(text, "a"))[4] == "0.50x"
    assert cells(line_for(text, "b"))[4] == "1.50x"
    assert cells(line_for(text, "c"))[4] == "0.00x"
    text = report([row(name="a"), row(name="b", status="pending")])
    assert [cells(line_for(text, n))[4] for n in "ab"] == ["-", "-"]


def test_icons_of_every_status() -> None:
    statuses = {
        "pending": "·",
        "starting": "◌",
        "running": "▶",
        "waiting": "⏳",
        "completed": "✓",
        "failed": "✗",
        "timeout": "⏱",
        "cancelled": "⊘",
        "blocked": "⛔",
        "skipped": "↷",
    }
    rows = [row(name=f"i-{s}", status=s) for s in statuses]
    text = report(rows)
    for status, icon in statuses.items():
        assert line_for(text, f"i-{status}").startswith(icon)


def test_header_counts_starting_and_waiting_as_running() -> None:
    rows = [
        row(name="a", status="starting"),
        row(name="b", status="waiting"),
        row(name="c", status="running"),
        row(name="d", status="completed"),
        row(name="e", status="completed"),
        row(name="f", status="failed"),
        row(name="g", status="timeout"),
        row(name="h", status="pending"),
    ]
    assert header_line("coordinator t", 125, rows) == (
        "coordinator t · 2m05s · running 3 · completed 2 · failed 1 · timeout 1 · pending 1"
    )
    assert header_line("x", 0, [row(name="a", status="pending")]) == "x · 0.0s · pending 1"
    assert lines_of(report(rows))[0] == header_line("coordinator t", 65, rows)


def test_wait_time_is_shown_from_one_second() -> None:
    text = report([row(name="w", status="waiting", duration_s=80, wait_s=75, last_event="barrier")])
    assert cells(line_for(text, "w"))[2] == "1m20s (+1m15s wait)"
    text = report([row(name="w", status="waiting", duration_s=80, wait_s=0.9)])
    assert cells(line_for(text, "w"))[2] == "1m20s"


def test_a_relaunched_instance_shows_its_attempt() -> None:
    text = report([row(name="w", status="retrying", attempts=2), row(name="v", attempts=1)])
    assert cells(line_for(text, "w #2"))[1] == "w #2"
    assert cells(line_for(text, "v"))[1] == "v"
    (line,) = plain_lines([row(name="w", attempts=3)])
    assert line.split()[1:3] == ["w", "#3"]


def test_last_event_is_text_not_markup() -> None:
    """Stream text such as a path in brackets is shown as is (it used to raise
    MarkupError, or vanish when it looked like a style tag)."""
    rows = [
        row(name="a", last_event="Reading [/src/app.py]"),
        row(name="b", last_event="fixed list[int] [bold]x[/bold]"),
    ]
    text = report(rows)
    assert line_for(text, "a").endswith("Reading [/src/app.py]")
    assert line_for(text, "b").endswith("fixed list[int] [bold]x[/bold]")


def tail_rows() -> list[StatusRow]:
    tail = (*(f"line {i}" for i in range(1, 6)), "L" * 200)
    return [
        row(name="run", status="running", output_tail=tail),
        row(name="wait", status="waiting", output_tail=("waiting out",)),
        row(name="start", status="starting", output_tail=("starting out",)),
        row(name="done", status="completed", output_tail=("finished out",)),
        row(name="bad", status="failed", output_tail=("failed out",)),
    ]


def test_output_tail_last_lines_of_live_instances_clipped() -> None:
    text = report(tail_rows(), ReportOptions(max_console_lines=2, max_line_length=30))
    lines = lines_of(text)
    start = lines.index("── run")
    assert lines[start + 1 : start + 3] == ["   line 5", "   " + "L" * 30]
    assert "line 4" not in text  # only the last 2
    assert not any("L" * 31 in line for line in lines)
    assert "── wait" in lines and "   waiting out" in lines
    assert "── start" in lines and "   starting out" in lines
    # finished instances' output is not shown
    assert "done" not in {line.removeprefix("── ") for line in lines}
    assert "finished out" not in text and "failed out" not in text


def test_output_tail_off_by_default() -> None:
    text = report(tail_rows())
    assert "──" not in text and "line 5" not in text and "waiting out" not in text


def test_notes_are_shown_under_the_table() -> None:
    text = report([row(name="a")], extra=["overall token budget reached 80%"])
    assert lines_of(text)[-1] == "overall token budget reached 80%"


def budget(
    scope: BudgetScope, unit: BudgetUnit, used: float, limit: float, target: str = ""
) -> Budget:
    return Budget(scope, unit, limit, frozenset({"a"}), target=target, used=used)


def test_budget_bars_percent_amounts_and_colours() -> None:
    budgets = [
        budget(BudgetScope.OVERALL, BudgetUnit.TOKENS, 850, 1000),
        budget(BudgetScope.COMMAND, BudgetUnit.USD, 0.5, 2.0, "/review"),
        budget(BudgetScope.COMMAND, BudgetUnit.TOKENS, 1200, 1000, "/fix"),
        budget(BudgetScope.INSTANCE, BudgetUnit.TOKENS, 10, 100, "a"),  # not drawn
    ]
    bars = budget_bars(budgets, width=20)
    assert [b.plain for b in bars] == [
        "budget overall          " + "█" * 17 + "░" * 3 + "  85.0%  850/1,000 tokens",
        "budget /review          " + "█" * 5 + "░" * 15 + "  25.0%  $0.5000/$2.0000",
        "budget /fix             " + "█" * 20 + " 120.0%  1,200/1,000 tokens",
    ]

    def colour_of_fill(bar: Text) -> str:
        start = bar.plain.index("█")
        return next(str(s.style) for s in bar.spans if s.start == start)

    assert [colour_of_fill(b) for b in bars] == ["yellow", "green", "red"]
    # the edges: below 80% green, 80% yellow, 100% red
    edges = [budget(BudgetScope.OVERALL, BudgetUnit.TOKENS, u, 100) for u in (79, 80, 99, 100)]
    assert [colour_of_fill(b) for b in budget_bars(edges)] == ["green", "yellow", "yellow", "red"]


def test_budget_bars_in_the_report_unless_disabled() -> None:
    budgets = [budget(BudgetScope.OVERALL, BudgetUnit.TOKENS, 500, 1000)]
    rows = [row(name="a")]
    shown = render_plain(render_report("t", 1, rows, budgets, ReportOptions()))
    assert "budget overall" in shown and "50.0%  500/1,000 tokens" in shown
    hidden = render_plain(render_report("t", 1, rows, budgets, ReportOptions(budget_visuals=False)))
    assert "budget" not in hidden


def test_plain_lines_carry_the_same_facts() -> None:
    assert plain_lines(three_rows()) == [
        "✓ alpha status=completed time=1m05s tokens=1000 vs_median=0.50 cache_read=300 "
        "tools=2 cost=0.0125 progress=100% last='completed'",
        "▶ beta status=running time=12.3s tokens=2000 vs_median=1.00 cache_read=1500 "
        "tools=7 cost=~0.5000 progress=42% last='auth error, retry 3/10'",
        "✗ gamma status=failed time=1h02m tokens=5000 vs_median=2.50 cache_read=0 "
        "tools=1 cost=1.2500 progress=10% last='permission denied: Bash'",
    ]
    assert plain_lines([row(name="p", status="pending")])[0].startswith(
        "· p status=pending time=1.0s tokens=0 vs_median=- "
    )
    waited = plain_lines([row(name="w", status="waiting", wait_s=7.1)])[0]
    assert waited.startswith("⏳ w status=waiting time=1.0s wait=7.1s tokens=")
    assert plain_totals(three_rows()) == "total tokens=8000 cache_read=1800 tools=10 cost=~1.7625"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-3, "0.0s"),
        (0, "0.0s"),
        (0.04, "0.0s"),
        (9.96, "10.0s"),
        (59.94, "59.9s"),
        (59.96, "1m00s"),  # not "60.0s"
        (60, "1m00s"),
        (61.4, "1m01s"),
        (119.6, "2m00s"),
        (3599.4, "59m59s"),
        (3599.6, "1h00m"),  # not "60m00s"
        (3600, "1h00m"),
        (7325, "2h02m"),
        (90000, "25h00m"),
    ],
)
def test_fmt_duration(seconds: float, shown: str) -> None:
    assert fmt_duration(seconds) == shown
