from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from coordinator.errors import UsageError
from coordinator.schedule import format_countdown, parse_start_at, stagger_offsets

TZ = timezone(timedelta(hours=1))
NOW = datetime(2026, 11, 21, 3, 0, tzinfo=TZ)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2am", datetime(2026, 11, 22, 2, 0, tzinfo=TZ)),  # already past today: tomorrow
        ("4am", datetime(2026, 11, 21, 4, 0, tzinfo=TZ)),
        ("11:30pm", datetime(2026, 11, 21, 23, 30, tzinfo=TZ)),
        ("12am", datetime(2026, 11, 22, 0, 0, tzinfo=TZ)),
        ("14:30", datetime(2026, 11, 21, 14, 30, tzinfo=TZ)),
        ("03:00", datetime(2026, 11, 22, 3, 0, tzinfo=TZ)),  # now exactly: next occurrence
        ("2h", NOW + timedelta(hours=2)),
        ("30m", NOW + timedelta(minutes=30)),
        ("1h30m", NOW + timedelta(minutes=90)),
        ("2026-12-01T08:00:00+00:00", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),
        ("2026-12-01T08:00", datetime(2026, 12, 1, 8, 0, tzinfo=TZ)),
    ],
)
def test_parse_start_at(text: str, expected: datetime) -> None:
    assert parse_start_at(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "soon", "25:00", "13pm", "7", "2026-13-01"])
def test_parse_start_at_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--start-at"):
        parse_start_at(text, NOW)


def test_stagger_and_countdown() -> None:
    assert stagger_offsets(3, 1.5) == [0, 1.5, 3.0]
    assert format_countdown(3725) == "1:02:05"
