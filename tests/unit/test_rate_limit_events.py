"""``rate_limit_event`` lines become typed :class:`RateLimit` events, whatever their shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runner.events import Other, RateLimit, Result, WindowUsage, parse_event, parse_line

# Verbatim shapes written by the pinned CLI 2.1.329 (coordinator/limits/CLI-FACTS.md).
ALLOWED = (
    b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1796124305,'
    b'"rateLimitType":"five_hour","isUsingOverage":false,"unifiedWindows":{"five_hour":'
    b'{"utilization":0.3,"resetsAt":1796124305,"status":"allowed"},"seven_day":'
    b'{"utilization":0.1,"resetsAt":1796725505,"status":"allowed"}}},"uuid":"u","session_id":"s"}'
)
WARNING = (
    b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning",'
    b'"resetsAt":1796124308,"rateLimitType":"five_hour","utilization":0.82,'
    b'"isUsingOverage":false,"surpassedThreshold":0.82,"unifiedWindows":{"five_hour":'
    b'{"utilization":0.82,"resetsAt":1796124308,"status":"allowed_warning",'
    b'"surpassedThreshold":0.82}}},"uuid":"u","session_id":"s"}'
)
REJECTED = (
    b'{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796124345,'
    b'"rateLimitType":"seven_day","isUsingOverage":false},"uuid":"u","session_id":"s"}'
)


def test_allowed_takes_utilization_from_the_representative_window() -> None:
    event = parse_line(ALLOWED)
    assert isinstance(event, RateLimit)
    assert (event.status, event.resets_at, event.limit_type) == ("allowed", 1796124305, "five_hour")
    assert event.utilization == pytest.approx(0.3)
    assert event.using_overage is False and not event.rejected and not event.warning
    assert event.windows["seven_day"] == WindowUsage(0.1, 1796725505, "allowed")


def test_warning_and_rejected() -> None:
    warning = parse_line(WARNING)
    assert isinstance(warning, RateLimit) and warning.warning
    assert warning.utilization == pytest.approx(0.82)
    assert warning.surpassed_threshold == pytest.approx(0.82)
    rejected = parse_line(REJECTED)
    assert isinstance(rejected, RateLimit) and rejected.rejected
    assert (rejected.resets_at, rejected.limit_type, rejected.utilization) == (
        1796124345,
        "seven_day",
        None,
    )


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({}, RateLimit("unknown", None, None, None, False)),
        (None, RateLimit("unknown", None, None, None, False)),
        ("text", RateLimit("unknown", None, None, None, False)),
        ({"status": "throttled"}, RateLimit("throttled", None, None, None, False)),
        ({"status": 3, "resetsAt": "soon"}, RateLimit("unknown", None, None, None, False)),
        (
            {"status": "rejected", "resetsAt": True, "utilization": -1, "isUsingOverage": 1},
            RateLimit("rejected", None, None, None, False),
        ),
        (
            {"status": "rejected", "resetsAt": 1.5e9, "isUsingOverage": True, "rateLimitType": 7},
            RateLimit("rejected", 1.5e9, None, None, True),
        ),
        (
            {"status": "allowed", "unifiedWindows": {"five_hour": "x", "seven_day": {}}},
            RateLimit("allowed", None, None, None, False),
        ),
        (
            {"status": "allowed", "rateLimitType": "five_hour", "unifiedWindows": []},
            RateLimit("allowed", None, "five_hour", None, False),
        ),
    ],
)
def test_odd_shapes_never_crash(info: Any, expected: RateLimit) -> None:
    event = parse_event({"type": "rate_limit_event", "rate_limit_info": info})
    assert event == expected


def test_nan_and_infinite_numbers_are_dropped() -> None:
    event = parse_event(
        {
            "type": "rate_limit_event",
            "rate_limit_info": {
                "status": "allowed",
                "resetsAt": float("inf"),
                "utilization": float("nan"),
            },
        }
    )
    assert isinstance(event, RateLimit)
    assert (event.resets_at, event.utilization) == (None, None)


def test_result_keeps_api_error_and_terminal_reason() -> None:
    line = orjson.dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "api_error_status": 429,
            "api_error": "usage_limit_reached",
            "terminal_reason": "api_error",
            "result": "You've hit your 5-hour limit · resets 10:36am (UTC)",
        }
    )
    result = parse_line(line)
    assert isinstance(result, Result)
    assert (result.api_error, result.terminal_reason) == ("usage_limit_reached", "api_error")
    other = parse_line(b'{"type":"rate_limit_events","rate_limit_info":{}}')
    assert isinstance(other, Other)
