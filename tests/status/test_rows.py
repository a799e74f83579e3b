"""A status row from live engine state: the accountant's exact figures, progress, waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordinator.engine.state import Status
from coordinator.status.rows import counts, row_from_state
from tests.status.helpers import feed, idle_orchestrator, row
from tests.unit.streams import api_response, result, usage


def test_row_from_a_state_fed_with_stream_lines(tmp_path: Path) -> None:
    orch = idle_orchestrator(tmp_path, ["a"])
    state = orch.states["a"]
    state.status = Status.RUNNING
    state.started_mono = 100.0
    state.last_event = "tool: Bash"
    state.output_tail.extend(["one", "two"])
    feed(
        state,
        *api_response(
            "m1",
            1200,
            300,
            cr=4000,
            cc=500,
            texts=("PROGRESS: 40%",),
            tools=(("t1", "Bash", {"command": "ls"}), ("t2", "Read", {"file_path": "x"})),
        ),
    )
    r = row_from_state(state, now=112.5)
    assert r.name == "a" and r.status == "running" and r.icon == "▶"
    assert r.duration_s == 12.5
    assert r.total_tokens == 1200 + 300 + 4000 + 500
    assert r.cache_read_tokens == 4000
    assert r.tool_calls == 2
    assert r.progress_pct == 40.0
    assert r.cost_estimated and r.cost_usd > 0  # no result yet: a price-table estimate
    assert r.last_event == "tool: Bash"
    assert r.output_tail == ("one", "two")

    feed(state, result(usage(1200, 300, 4000, 500), cost=0.0421))
    state.status = Status.COMPLETED
    state.ended_mono = 130.0
    r = row_from_state(state, now=999.0)
    assert r.duration_s == 30.0  # ended: the clock stops
    assert r.cost_usd == 0.0421 and not r.cost_estimated  # the CLI's figure
    assert r.progress_pct == 100.0


def test_nothing_streamed_is_not_an_estimate(tmp_path: Path) -> None:
    r = row_from_state(idle_orchestrator(tmp_path, ["a"]).states["a"], now=5.0)
    assert (r.status, r.icon, r.duration_s, r.total_tokens) == ("pending", "·", 0.0, 0)
    assert r.cost_usd == 0.0 and not r.cost_estimated
    assert r.last_event == "pending"


def test_waiting_shows_where_it_waits_and_for_how_long(tmp_path: Path) -> None:
    state = idle_orchestrator(tmp_path, ["a"]).states["a"]
    state.status = Status.WAITING
    state.started_mono = 10.0
    state.wait_s = 4.0  # earlier waits
    state.waiting_since = 20.0
    state.wait_point = "milestone:50"
    state.wait_arrived = (2, 3)
    state.last_event = "PROGRESS: 50%"
    r = row_from_state(state, now=26.0)
    assert r.last_event == "waiting at 50%, 2/3 arrived, 6 s"
    assert r.wait_s == 10.0 and r.duration_s == 16.0
    state.status = Status.RUNNING  # released: the note no longer applies
    state.waiting_since = None
    state.wait_s = 10.0
    r = row_from_state(state, now=30.0)
    assert r.last_event == "PROGRESS: 50%" and r.wait_s == 10.0


def test_tool_calls_count_each_tool_use_once(tmp_path: Path) -> None:
    state = idle_orchestrator(tmp_path, ["a"]).states["a"]
    bash: tuple[tuple[str, str, dict[str, Any]], ...] = (("t1", "Bash", {}),)
    feed(state, *api_response("m1", 10, 5, tools=bash), *api_response("m1", 10, 5, tools=bash))
    assert row_from_state(state, now=1.0).tool_calls == 1  # the same line seen twice
    feed(state, *api_response("m2", 10, 5, tools=(("t2", "Bash", {}),)))
    assert row_from_state(state, now=1.0).tool_calls == 2


def test_counts() -> None:
    rows = [row(name=str(i), status=s) for i, s in enumerate(["starting", "waiting", "failed"])]
    assert counts(rows) == {"running": 2, "failed": 1}
