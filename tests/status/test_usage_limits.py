"""Account utilization and the allowed_warning in the status report (table and plain lines)."""

from __future__ import annotations

from pathlib import Path

from coordinator.status.render import ReportOptions, plain_lines, render_report, usage_lines
from coordinator.status.rows import row_from_state
from runner.events import RateLimit, parse_line
from tests.status.helpers import idle_orchestrator, lines_of, render_plain, row

WARNING = (
    b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning",'
    b'"resetsAt":1796124308,"rateLimitType":"five_hour","utilization":0.82,'
    b'"isUsingOverage":false,"surpassedThreshold":0.82,"unifiedWindows":{"five_hour":'
    b'{"utilization":0.82,"resetsAt":1796124308,"status":"allowed_warning"},"seven_day":'
    b'{"utilization":0.4,"resetsAt":1796725508,"status":"allowed"}}},"uuid":"u","session_id":"s"}'
)


def test_rows_from_state_carry_utilization_and_warning(tmp_path: Path) -> None:
    orchestrator = idle_orchestrator(tmp_path, ["a", "b"])
    a, b = orchestrator.states["a"], orchestrator.states["b"]
    event = parse_line(WARNING)
    assert isinstance(event, RateLimit)
    a.rate_limit = event
    row_a, row_b = row_from_state(a), row_from_state(b)
    assert row_a.usage == "5h 82% · 7d 40%"
    assert row_a.usage_warning is not None
    assert row_a.usage_warning.startswith("usage warning: five_hour limit 82% used, resets ")
    assert (row_b.usage, row_b.usage_warning) == (None, None)

    text = render_plain(render_report("t", 1.0, [row_a, row_b], [], ReportOptions()))
    usage = [line for line in lines_of(text) if line.startswith("usage ")]
    assert usage == [f"usage 5h 82% · 7d 40% · {row_a.usage_warning} (a)"]
    plain = plain_lines([row_a, row_b])
    assert "usage='5h 82% · 7d 40%'" in plain[0] and "warning='usage warning" in plain[0]
    assert "usage=" not in plain[1]


def test_usage_lines_group_instances_that_share_an_account_state() -> None:
    rows = [
        row(name="a", usage="5h 30%"),
        row(name="b", usage="5h 30%"),
        row(name="c", usage="5h 31%"),
        row(name="d"),
    ]
    assert usage_lines(rows) == ["usage 5h 30% (a, b)", "usage 5h 31% (c)"]
    assert usage_lines([row(name="d")]) == []
