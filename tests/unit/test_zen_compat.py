"""The Python orchestrator's (zen's) config spellings and flags, mapped onto ours: the pure
pieces (the loader, the plan and its notes, direct mode, the top-level direct form)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli import cli, first_positional, verbosity_of
from coordinator.config import parse_config
from coordinator.config.compat import strip_comments
from coordinator.config.direct import DirectCommand, direct_config
from coordinator.config.models import BudgetMode, BudgetType
from coordinator.errors import ConfigError, UsageError
from coordinator.plan import RunOptions, RunPlan, build_plan

GO = {"command": "/go now", "name": "a"}


def plan_of(data: dict[str, Any], tmp_path: Path, **options: Any) -> RunPlan:
    return build_plan(
        parse_config(data, "z.json"),
        RunOptions(orchestration_id="t", **options),
        claude_bin="claude",
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "z.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("z.json: ")
    return message


def test_comment_keys_are_dropped_at_every_depth_and_nothing_else_is() -> None:
    data = {
        "// Description": "x",
        "instances": [{"// Role": 1, "command": "go", "env": {"// why": "k", "A": "b"}}],
        "// Notes": {"list": [{"// deep": 1, "kept": 2}]},
        "orchestration": {"budget": {"// b": 1, "overall_tokens": 5}},
    }
    assert strip_comments(data) == {
        "instances": [{"command": "go", "env": {"A": "b"}}],
        "orchestration": {"budget": {"overall_tokens": 5}},
    }
    config = parse_config(data)
    assert config.instances[0].env == {"A": "b"}
    assert config.orchestration.budget.overall_tokens == 5


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"Description": "x", "instances": [GO]}, "z.json: Description = 'x': unknown field"),
        ({"instances": [{**GO, "/ note": 1}]}, "instances[0]./ note = 1: unknown field"),
        ({"budget": {"overall_budgets": 5}, "instances": [GO]}, "budget.overall_budgets = 5"),
    ],
)
def test_other_unknown_fields_stay_errors(data: dict[str, Any], fragment: str) -> None:
    assert fragment in refused(data)


def test_the_budget_block_maps_onto_orchestration_budget() -> None:
    config = parse_config(
        {
            "budget": {
                "overall_budget": 1000,
                "overall_cost_budget": 2.5,
                "budget_type": "mixed",
                "enforcement_mode": "block",
                "disable_visuals": True,
                "command_budgets": {"analyze": 100, "/fix": 200},
                "command_cost_budgets": {"analyze": 1.0},
            },
            "orchestration": {"budget": {"count_cache_reads": False}},
            "instances": [GO],
        }
    )
    budget = config.orchestration.budget
    assert budget.overall_tokens == 1000 and budget.overall_cost_usd == 2.5
    assert budget.budget_type is BudgetType.MIXED and budget.mode is BudgetMode.BLOCK
    assert budget.visuals is False and budget.count_cache_reads is False
    assert budget.command_budgets == {"/analyze": 100, "/fix": 200}
    assert budget.command_cost_budgets == {"/analyze": 1.0}
    assert config.budget is None  # moved, not kept twice


def test_the_same_value_in_both_blocks_is_no_conflict() -> None:
    config = parse_config(
        {
            "budget": {"overall_budget": 5, "command_budgets": {"a": 1}},
            "orchestration": {"budget": {"overall_tokens": 5, "command_budgets": {"/b": 2}}},
            "instances": [GO],
        }
    )
    assert config.orchestration.budget.command_budgets == {"/b": 2, "/a": 1}


@pytest.mark.parametrize(
    ("theirs", "ours", "fragments"),
    [
        (
            {"overall_budget": 5},
            {"overall_tokens": 6},
            ["budget.overall_budget = 5", "orchestration.budget.overall_tokens = 6"],
        ),
        (
            {"enforcement_mode": "block"},
            {"mode": "warn"},
            ["budget.enforcement_mode = 'block'", "orchestration.budget.mode = 'warn'"],
        ),
        (
            {"disable_visuals": True},
            {"visuals": True},
            ["budget.disable_visuals = True", "orchestration.budget.visuals = True"],
        ),
        (
            {"command_cost_budgets": {"x": 1.0}},
            {"command_cost_budgets": {"/x": 2.0}},
            ["budget.command_cost_budgets./x = 1.0", "command_cost_budgets./x = 2.0"],
        ),
    ],
)
def test_a_conflict_between_the_blocks_names_both_fields(
    theirs: dict[str, Any], ours: dict[str, Any], fragments: list[str]
) -> None:
    message = refused({"budget": theirs, "orchestration": {"budget": ours}, "instances": [GO]})
    for fragment in fragments:
        assert fragment in message
    assert "set it in one of them" in message


def test_prompt_is_the_command() -> None:
    config = parse_config({"instances": [{"prompt": "What are the available commands?"}]})
    assert config.instances[0].command == "What are the available commands?"
    assert config.instance_names() == ["what-are-the-available-commands"]


@pytest.mark.parametrize(
    ("instance", "fragment"),
    [
        ({"prompt": "a", "command": "b"}, "give command or prompt, not both"),
        ({"name": "x"}, "instances[0].command: required field is missing (give command, or"),
        ({"prompt": "  "}, "prompt must be non-blank text"),
        ({"prompt": 5}, "prompt must be non-blank text, not 5"),
    ],
)
def test_prompt_and_command_exactly_one(instance: dict[str, Any], fragment: str) -> None:
    assert fragment in refused({"instances": [instance]})


def test_output_format_json_runs_as_stream_json_and_says_so_once(tmp_path: Path) -> None:
    plan = plan_of(
        {"instances": [{**GO, "output_format": "json"}, {"command": "b", "output_format": "json"}]},
        tmp_path,
    )
    for inst in plan.instances:
        argv = list(inst.argv)
        assert argv[argv.index("--output-format") + 1] == "stream-json"
        assert "json" not in argv[argv.index("--output-format") + 2 :][:1]
    said = [n for n in plan.notes if "output format json" in n]
    assert len(said) == 1 and "a, b" in said[0] and "stream-json" in said[0]
    flag = plan_of({"instances": [GO]}, tmp_path, output_format="json")
    assert [n for n in flag.notes if "output format json" in n]
    assert not [n for n in plan_of({"instances": [GO]}, tmp_path).notes if "json" in n]


def test_no_permission_mode_keeps_accept_edits_and_says_so_once(tmp_path: Path) -> None:
    plan = plan_of({"instances": [GO, {"command": "b"}]}, tmp_path)
    assert {i.permission_mode.value for i in plan.instances} == {"acceptEdits"}
    said = [n for n in plan.notes if "permission_mode" in n]
    assert len(said) == 1
    for fragment in ("a, b", "acceptEdits", "outside allowed_tools are denied", "bypass"):
        assert fragment in said[0]
    assert "--permission-mode bypassPermissions" in said[0]
    given = plan_of({"instances": [{**GO, "permission_mode": "acceptEdits"}]}, tmp_path)
    assert not [n for n in given.notes if "permission_mode" in n]
    from coordinator.config.models import PermissionMode

    flag = plan_of({"instances": [GO]}, tmp_path, permission_mode=PermissionMode.DEFAULT)
    assert not [n for n in flag.notes if "permission_mode" in n]


def _budgets(tmp_path: Path, given: str | None, **options: Any) -> RunPlan:
    block: dict[str, Any] = {
        "overall_budget": 1000,
        "overall_cost_budget": 3.0,
        "command_budgets": {"go": 100},
        "command_cost_budgets": {"go": 1.0},
    }
    if given:
        block["budget_type"] = given
    instance = {**GO, "max_tokens_per_command": 50, "max_cost_usd": 0.5}
    return plan_of({"budget": block, "instances": [instance]}, tmp_path, **options)


def test_budget_type_says_which_budgets_count(tmp_path: Path) -> None:
    for every in (None, "mixed"):
        plan = _budgets(tmp_path, every)
        assert plan.budget.overall_tokens == 1000 and plan.budget.overall_cost_usd == 3.0
        assert plan.instances[0].token_budget == 50
        assert plan.instances[0].cost_budget_usd == 0.5
        assert not [n for n in plan.notes if "budget type" in n]
    tokens = _budgets(tmp_path, "tokens")
    assert tokens.budget.overall_cost_usd is None and tokens.budget.command_cost_budgets == {}
    assert tokens.budget.overall_tokens == 1000 and tokens.instances[0].token_budget == 50
    assert tokens.instances[0].cost_budget_usd is None
    assert "--max-budget-usd" not in tokens.instances[0].argv
    (note,) = [n for n in tokens.notes if "budget type" in n]
    assert note == (
        "budget type tokens: not enforced: overall $3; /go $1; max_cost_usd of 1 instance(s)"
    )
    cost = _budgets(tmp_path, "cost")
    assert cost.budget.overall_tokens is None and cost.budget.command_budgets == {}
    assert cost.instances[0].token_budget is None and cost.instances[0].cost_budget_usd == 0.5
    (note,) = [n for n in cost.notes if "budget type" in n]
    assert "overall 1,000 tokens; /go 100 tokens; max_tokens_per_command of 1" in note


def test_the_flag_wins_over_the_budget_type_of_the_config(tmp_path: Path) -> None:
    plan = _budgets(tmp_path, "cost", budget_type=BudgetType.MIXED, overall_token_budget=7)
    assert plan.budget.overall_tokens == 7 and plan.budget.overall_cost_usd == 3.0
    assert plan.budget.budget_type is BudgetType.MIXED


def test_direct_mode_builds_one_instance_without_a_file() -> None:
    direct = DirectCommand("/analyze src", name="a", session_id="s1", clear_history=True)
    config = direct_config(direct, None)
    (inst,) = config.instances
    assert (inst.command, inst.name, inst.session_id, inst.clear_history) == (
        "/analyze src",
        "a",
        "s1",
        True,
    )
    assert DirectCommand.from_record(direct.as_record()) == direct


def test_direct_mode_with_a_config_replaces_its_instances_under_its_settings() -> None:
    base = parse_config(
        {
            "budget": {"overall_budget": 9},
            "orchestration": {"timeout": 5},
            "instances": [GO, GO | {"name": "b"}],
        }
    )
    config = direct_config(DirectCommand("fix it"), base)
    assert [i.command for i in config.instances] == ["fix it"]
    assert config.orchestration.timeout == 5 and config.orchestration.budget.overall_tokens == 9


@pytest.mark.parametrize(
    ("direct", "fragment"),
    [
        (DirectCommand("  "), "the command '  ': command must not be blank"),
        (DirectCommand("/x", session_id="bad id!"), "--session-id 'bad id!': session_id must"),
        (DirectCommand("/x", name="a\nb"), "--instance-name 'a\\nb'"),
    ],
)
def test_bad_direct_mode_input_names_the_flag(direct: DirectCommand, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        direct_config(direct, None)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["/analyze src"], "/analyze src"),
        (["--config", "c.json", "--dry-run", "/x"], "/x"),
        (["--timeout=5", "--", "-odd"], "-odd"),
        (["--no-db", "status"], "status"),
        (["--config", "c.json"], None),
    ],
)
def test_first_positional_skips_options_and_their_values(args: list[str], word: str | None) -> None:
    assert first_positional(cli.params, args) == word


def test_a_single_word_that_is_no_subcommand_is_not_taken_as_a_prompt() -> None:
    import click

    with pytest.raises(click.UsageError, match="No such command 'stauts'"):
        ctx = cli.make_context("coordinator", ["stauts"])
        cli.invoke(ctx)


@pytest.mark.parametrize(
    ("kw", "level"),
    [
        ({}, "concise"),
        ({"quiet": True}, "silent"),
        ({"verbose": True}, "detailed"),
        ({"verbosity": "concise", "quiet": True}, "concise"),  # --log-level first
        ({"quiet": True, "verbose": True}, "silent"),  # then --quiet, then --verbose
    ],
)
def test_log_level_quiet_verbose_in_the_python_orchestrators_order(
    kw: dict[str, Any], level: str
) -> None:
    assert verbosity_of(kw) == level
