from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.budget.flags import parse_command_budgets
from coordinator.budget.rules import BudgetScope, budgets_from_plan, unused_command_budgets
from coordinator.config import parse_config
from coordinator.errors import UsageError
from coordinator.plan import RunOptions, build_plan
from runner.events import Usage


def book_for(budget: dict[str, object], tmp_path: Path):  # type: ignore[no-untyped-def]
    config = parse_config(
        {
            "orchestration": {"budget": budget},
            "instances": [
                {"command": "/a one", "name": "a1", "max_tokens_per_command": 1000},
                {"command": "/a two", "name": "a2"},
                {"command": "/b", "name": "b1"},
            ],
        }
    )
    plan = build_plan(
        config,
        RunOptions(),
        claude_bin="claude",
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )
    return plan, budgets_from_plan(plan)


def test_command_budget_is_shared_and_thresholds_fire_once(tmp_path: Path) -> None:
    _, book = book_for({"command_budgets": {"/a": 500}, "overall_tokens": 10_000}, tmp_path)
    assert book.update("a1", Usage(300, 0), 0.0) == []
    events = book.update("a2", Usage(150, 0), 0.0)  # 450/500 = 90%: the 80% warning
    assert [(e.budget.scope, e.threshold, e.exceeded) for e in events] == [
        (BudgetScope.COMMAND, 80, False)
    ]
    assert book.update("a2", Usage(160, 0), 0.0) == []  # still 92%: nothing new
    events = book.update("a1", Usage(400, 0), 0.0)  # 560/500
    kinds = {(e.budget.scope, e.threshold, e.exceeded) for e in events}
    assert (BudgetScope.COMMAND, 100, True) in kinds
    assert (BudgetScope.COMMAND, 100, False) in kinds
    assert book.spent_for("a2") is not None
    assert book.spent_for("b1") is None
    assert book.update("b1", Usage(10, 0), 0.0) == []


def test_cache_reads_can_be_excluded(tmp_path: Path) -> None:
    _, book = book_for({"overall_tokens": 100, "count_cache_reads": False}, tmp_path)
    assert book.update("b1", Usage(50, 0, cache_read_tokens=10_000), 0.0) == []
    assert book.budgets[0].used == 50


def test_instance_budget_and_unused_command_budget(tmp_path: Path) -> None:
    plan, book = book_for({"command_budgets": {"/zzz": 5}}, tmp_path)
    events = book.update("a1", Usage(600, 500), 0.0)
    assert any(e.exceeded and e.budget.scope is BudgetScope.INSTANCE for e in events)
    assert unused_command_budgets(plan) == ["/zzz"]


@pytest.mark.parametrize(
    "raw", ["/x=", "=5", "a b=5", "/x=abc", "/x=0", "/x=-3", "/x", "/x=1,000", "/a=1,/b"]
)
def test_command_budget_flag_errors(raw: str) -> None:
    with pytest.raises(UsageError, match="--command-budget"):
        parse_command_budgets([raw], "--command-budget", int)


def test_command_budget_flag_ok() -> None:
    assert parse_command_budgets(["/x=5", " /y = 7 "], "--command-budget", int) == {
        "/x": 5,
        "/y": 7,
    }


def test_command_budget_flag_as_the_python_orchestrator_takes_it() -> None:
    """The slash may be left out (it adds it); its guide's comma form sets several."""
    assert parse_command_budgets(["analyze=5", "/a=1,/b=2"], "--command-budget", int) == {
        "/analyze": 5,
        "/a": 1,
        "/b": 2,
    }
    assert parse_command_budgets(["debug=2.5"], "--command-cost-budget", float) == {"/debug": 2.5}
