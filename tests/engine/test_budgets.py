"""Budgets enforced by the engine on real (replay) processes."""

from __future__ import annotations

from pathlib import Path

from coordinator.engine.state import Status
from tests.engine.helpers import run_replay
from tests.unit.streams import api_response

HANG = {"sleep": 600}


def lines(msg: str, inp: int, out: int) -> dict[str, list[str]]:
    return {"lines": [raw.decode().rstrip("\n") for raw in api_response(msg, inp, out)]}


async def test_overall_block_stops_every_running_instance(tmp_path: Path) -> None:
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": "spender"}, {"command": "go", "name": "bystander"}],
        {
            "spender": [{"sleep": 0.2}, lines("m1", 900, 200), HANG],
            "bystander": [lines("b1", 10, 5), HANG],
        },
        orchestration={"startup_delay": 0, "budget": {"mode": "block", "overall_tokens": 1000}},
    )
    by = {s.name: s for s in outcome.states}
    assert by["spender"].status is Status.BLOCKED
    assert by["bystander"].status is Status.BLOCKED
    assert "overall token budget" in (by["spender"].reason or "")
    budget = outcome.budgets.budgets[0]
    assert budget.state == "exceeded" and set(budget.blocked) >= {"spender", "bystander"}


async def test_pending_instance_is_skipped_at_once_not_after_its_slot(tmp_path: Path) -> None:
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": "spender"}, {"command": "go", "name": "later"}],
        {"spender": [lines("m1", 900, 200), HANG], "later": [HANG]},
        orchestration={"startup_delay": 600, "budget": {"mode": "block", "overall_tokens": 1000}},
    )
    by = {s.name: s for s in outcome.states}
    assert by["spender"].status is Status.BLOCKED
    assert by["later"].status is Status.SKIPPED and by["later"].pid is None
    assert "spent" in (by["later"].reason or "")
    assert outcome.budgets.budgets[0].skipped == ["later"]
    assert outcome.ended_unix - outcome.started_unix < 60  # not the 600 s stagger slot


async def test_command_budget_is_shared_by_instances_of_that_command(tmp_path: Path) -> None:
    _orch, outcome = await run_replay(
        tmp_path,
        [
            {"command": "/x one", "name": "x1"},
            {"command": "/x two", "name": "x2"},
            {"command": "/y", "name": "y1"},
        ],
        {
            "x1": [lines("a", 300, 10), HANG],
            "x2": [{"sleep": 0.3}, lines("b", 300, 10), HANG],
            "y1": [
                lines("c", 300, 10),
                {"sleep": 1.0},
                {
                    "lines": [
                        '{"type":"result","subtype":"success","is_error":false,"num_turns":1,'
                        '"usage":{"input_tokens":300,"output_tokens":10}}'
                    ]
                },
            ],
        },
        orchestration={
            "startup_delay": 0,
            "budget": {"mode": "block", "command_budgets": {"/x": 500}},
        },
    )
    by = {s.name: s for s in outcome.states}
    assert by["x1"].status is Status.BLOCKED and by["x2"].status is Status.BLOCKED
    assert by["y1"].status is Status.COMPLETED  # another command: not covered
