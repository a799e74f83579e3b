"""The pure barrier rules: decision, point names, the sync status line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator.barrier.rules import (
    KeepWaiting,
    PointStatus,
    Release,
    decide,
    milestone_point,
    milestone_points,
    missing,
    point_label,
    point_sort_key,
    render_sync_line,
    step_point,
    step_points,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ABC = ["a", "b", "c"]


def test_everyone_arrived_releases() -> None:
    assert decide(ABC, {"a", "b", "c"}, set(), 0.0, 60) == Release(timed_out=False)


def test_someone_missing_keeps_waiting_with_time_left() -> None:
    decision = decide(ABC, {"a", "c"}, set(), 12.5, 60)
    assert decision == KeepWaiting(remaining_s=47.5, missing=("b",))


@pytest.mark.parametrize("elapsed", [60.0, 61.0, 1e9])
def test_timeout_releases_with_the_missing_names(elapsed: float) -> None:
    assert decide(ABC, {"b"}, set(), elapsed, 60) == Release(timed_out=True, missing=("a", "c"))


def test_completed_and_left_are_excused() -> None:
    assert decide(ABC, {"a"}, {"b", "c"}, 0.0, 60) == Release(timed_out=False)
    assert decide(ABC, set(), {"a", "b", "c"}, 0.0, 60) == Release(timed_out=False)


def test_excused_is_never_reported_missing_even_on_timeout() -> None:
    assert decide(ABC, set(), {"b"}, 99, 60) == Release(timed_out=True, missing=("a", "c"))


def test_arrivals_by_unknown_names_do_not_count_and_duplicates_do_not_matter() -> None:
    assert isinstance(decide(["a", "a", "b"], {"a", "zz"}, set(), 0.0, 60), KeepWaiting)
    assert decide(["a", "a", "b"], {"a", "b"}, set(), 0.0, 60) == Release(timed_out=False)


def test_no_participants_releases_at_once() -> None:
    assert decide([], set(), set(), 0.0, 60) == Release(timed_out=False)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        decide(ABC, set(), set(), 0.0, 0)


def test_missing_is_sorted_and_unique() -> None:
    assert missing(["c", "a", "b", "a"], {"b"}, set()) == ("a", "c")


def test_point_names_and_labels() -> None:
    assert milestone_point(30) == "milestone:30"
    assert step_point(2) == "step:2"
    assert milestone_points([90, 30, 50, 30]) == ["milestone:30", "milestone:50", "milestone:90"]
    assert step_points(4) == ["step:1", "step:2", "step:3"]
    assert step_points(1) == []
    assert point_label("milestone:70") == "70%"
    assert point_label("step:3") == "step 3"
    assert point_label("custom") == "custom"
    for bad in (0, 100, -5):
        with pytest.raises(ValueError):
            milestone_point(bad)
    with pytest.raises(ValueError):
        step_point(0)


def test_points_sort_numerically() -> None:
    names = ["step:10", "milestone:9", "x", "step:2", "milestone:30"]
    assert sorted(names, key=point_sort_key) == [
        "milestone:9",
        "milestone:30",
        "step:2",
        "step:10",
        "x",
    ]


def test_sync_line_shows_released_waiting_and_unreached() -> None:
    points = [
        PointStatus("milestone:30", ["a", "b", "c"], T0, released_at=T0),
        PointStatus("milestone:50", ["a", "b", "c"], T0, released_at=T0),
        PointStatus("milestone:70", ["a", "c"], T0, missing=["b"]),
    ]
    line = render_sync_line(points, milestone_points([30, 50, 70, 90]))
    assert line == "Sync points: ✓ 30% ✓ 50% ⏳ 70% (2/3) · 90%"


def test_sync_line_shows_a_timeout_with_who_was_missing() -> None:
    points = [PointStatus("step:1", ["a"], T0, released_at=T0, timed_out=True, missing=["b", "c"])]
    line = render_sync_line(points, step_points(3))
    assert line == "Sync points: ✗ step 1 (timeout: b, c) · step 2"


def test_sync_line_appends_points_the_plan_did_not_list() -> None:
    points = [PointStatus("step:5", ["a"], T0, released_at=T0)]
    assert render_sync_line(points, []) == "Sync points: ✓ step 5"
    assert render_sync_line([], []) == "Sync points: none"


# --------------------------------------------------------------- take-over


def test_passed_points_of_a_taken_over_instance() -> None:
    from coordinator.barrier.rules import passed_points

    assert passed_points([50, 30], 0, by_steps=False) == ["milestone:30", "milestone:50"]
    assert passed_points([], 3, by_steps=False) == []
    assert passed_points([30], 2, by_steps=True) == ["step:1", "step:2"]
    assert passed_points([30], 0, by_steps=True) == []  # a restart from the first turn


def test_a_rejoined_instance_waits_only_at_its_last_point_when_still_open() -> None:
    from coordinator.barrier.rules import rejoin_wait

    passed = ["milestone:30", "milestone:50"]
    assert rejoin_wait(passed, {"milestone:30", "milestone:50"}) is None
    assert rejoin_wait(passed, {"milestone:30"}) == "milestone:50"
    assert rejoin_wait(["step:2", "step:10"], {"step:2"}) == "step:10"  # by number
    assert rejoin_wait([], set()) is None


def test_timeouts_from_recorded_points() -> None:
    from coordinator.barrier.rules import timeouts_of

    points = [
        PointStatus("milestone:50", ["a", "b"], T0, T0, timed_out=True, missing=["c"]),
        PointStatus("milestone:30", ["a", "b", "c"], T0, T0),
    ]
    assert timeouts_of(points) == [
        {"point": "milestone:50", "instance": "a", "missing": ["c"]},
        {"point": "milestone:50", "instance": "b", "missing": ["c"]},
    ]
