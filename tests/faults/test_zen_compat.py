"""Configs and command lines of the Python orchestrator (``zen``), as its users have them:
comment keys, its top-level budget block, ``prompt``, ``output_format: "json"``, no
``permission_mode``, its flags and its direct mode. Each loads and runs unchanged through the
real entry point; each difference kept on purpose is said once and tested; bad values in the
new fields are one line and exit 2. Before, every one of these was refused."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults.bad_input import REPLAY, ROOT, Sandbox, assert_refused
from tests.faults.harness import answer, lines_of
from tests.unit.streams import api_response, init, result, usage

FIXTURES = ROOT / "tests" / "fixtures" / "zen"
ALL = sorted(FIXTURES.glob("*.json"))
JSON_NOTE = "output format json runs as stream-json"
PERMISSION_NOTE = "no permission_mode for"


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def dry_json(box: Sandbox, *args: str) -> dict[str, Any]:
    form = ["run"] if args[:1] == ("run",) else []
    out = box.run(*form, "--dry-run", "--json", *args[len(form) :])
    assert out.returncode == 0, out.stderr[-2000:]
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def recording_claude(tmp_path: Path) -> tuple[str, Path]:
    """A claude stand-in that writes the argv it was launched with, then is the replay."""
    log = tmp_path / "argv.jsonl"
    path = tmp_path / "claude-recording"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({REPLAY!r}, [{REPLAY!r}, *sys.argv[1:]])\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path), log


def script(tmp_path: Path, name: str, message_id: str, inp: int, out: int) -> Path:
    path = tmp_path / f"{name}.replay.json"
    path.write_text(json.dumps([{"lines": answer(message_id, inp, out)}]))
    return path


# --- its configs load and dry-run unchanged ----------------------------------------------


@pytest.mark.parametrize("fixture", ALL, ids=[f.stem for f in ALL])
def test_every_fixture_loads_and_dry_runs_unchanged(box: Sandbox, fixture: Path) -> None:
    out = box.run("--dry-run", "--config", str(fixture))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr and "error" not in out.stderr
    assert out.stdout.startswith("Dry run: orchestration ")
    assert not box.marker.exists()


def test_the_fixtures_cover_every_field_the_issue_names() -> None:
    text = "\n".join(f.read_text() for f in ALL)
    for field in (
        '"// Description"',
        '"// Configuration Notes"',
        '"overall_budget"',
        '"overall_cost_budget"',
        '"budget_type": "tokens"',
        '"budget_type": "cost"',
        '"budget_type": "mixed"',
        '"enforcement_mode"',
        '"disable_visuals"',
        '"command_budgets"',
        '"command_cost_budgets"',
        '"prompt"',
        '"output_format": "json"',
        '"pre_commands"',
        '"compact_history"',
        '"clear_history"',
        '"session_id"',
        '"allowed_tools"',
        '"max_tokens_per_command"',
    ):
        assert field in text, field


def test_its_budget_block_maps_onto_ours(box: Sandbox) -> None:
    budget = dry_json(box, "--config", str(FIXTURES / "budget_block.json"))["budget"]
    assert budget == {
        "mode": "block",
        "overall_tokens": 200000,
        "command_budgets": {"/analyze": 50000, "/runtests": 40000},
        "overall_cost_usd": 5.5,
        "command_cost_budgets": {"/analyze": 2.0, "/runtests": 1.5},
        "count_cache_reads": True,
        "budget_type": "mixed",
        "visuals": False,
    }


def test_flags_win_over_its_budget_block(box: Sandbox) -> None:
    budget = dry_json(
        box,
        "--config",
        str(FIXTURES / "budget_block.json"),
        "--overall-token-budget",
        "7",
        "--budget-enforcement-mode",
        "warn",
        "--budget-parameter-type",
        "tokens",
        "--command-budget",
        "analyze=9",
    )["budget"]
    assert budget["overall_tokens"] == 7 and budget["mode"] == "warn"
    assert budget["budget_type"] == "tokens"
    assert budget["command_budgets"] == {"/analyze": 9, "/runtests": 40000}
    assert budget["overall_cost_usd"] is None and budget["command_cost_budgets"] == {}


# --- the differences kept on purpose -----------------------------------------------------


def test_json_output_and_no_permission_mode_are_said_once_in_dry_run(box: Sandbox) -> None:
    out = box.run("--dry-run", "--config", str(FIXTURES / "budget_block.json"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(JSON_NOTE) == 1 and out.stdout.count(PERMISSION_NOTE) == 1
    line = next(x for x in out.stdout.splitlines() if PERMISSION_NOTE in x)
    assert "acceptEdits" in line and "outside allowed_tools are denied" in line
    assert "--permission-mode bypassPermissions" in line
    plan = dry_json(box, "--config", str(FIXTURES / "budget_block.json"))
    for inst in plan["instances"]:
        argv = inst["argv"]
        assert argv[argv.index("--output-format") + 1] == "stream-json"
        assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    opted = box.run(
        "--dry-run",
        "--config",
        str(FIXTURES / "budget_block.json"),
        "--permission-mode",
        "bypassPermissions",
        "--output-format",
        "stream-json",
    )
    assert PERMISSION_NOTE not in opted.stdout and JSON_NOTE not in opted.stdout


def test_a_run_says_them_once_at_start_and_launches_stream_json(tmp_path: Path) -> None:
    claude, argv_log = recording_claude(tmp_path)
    config = tmp_path / "zen.json"
    config.write_text(
        json.dumps(
            {
                "// Description": "a run, not a dry run",
                "orchestration": {"startup_delay": 0, "progress_instructions": False},
                "instances": [
                    {
                        "name": n,
                        "prompt": "work",
                        "output_format": "json",
                        "env": {"REPLAY_SCRIPT": str(script(tmp_path, n, f"m-{n}", 100, 20))},
                    }
                    for n in ("a", "b")
                ],
            }
        )
    )
    box = Sandbox(tmp_path)
    output = tmp_path / "results.json"
    out = box.run(
        "run", "--config", str(config), "--no-db", "--claude-bin", claude,
        "--output", str(output), "--status-report-interval", "0.5",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    said = out.stdout + out.stderr
    assert said.count(JSON_NOTE) == 1 and said.count(PERMISSION_NOTE) == 1
    launched = [json.loads(x) for x in argv_log.read_text().splitlines()]
    assert len(launched) == 2
    for argv in launched:
        assert argv[argv.index("--output-format") + 1] == "stream-json"
        assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    results = json.loads(output.read_text())
    assert [(i["name"], i["status"], i["total_tokens"]) for i in results["instances"]] == [
        ("a", "completed", 120),
        ("b", "completed", 120),
    ]


def test_budget_type_cost_leaves_token_budgets_unenforced_and_says_so(box: Sandbox) -> None:
    """Its cost type checks only USD budgets (it would even read overall_budget as USD);
    ours: the token budgets are dropped, by name, in one line."""
    path = str(FIXTURES / "cost_budget.json")
    plan = dry_json(box, "--config", path)
    assert plan["budget"]["overall_cost_usd"] == 25.0 and plan["budget"]["overall_tokens"] is None
    assert [i["token_budget"] for i in plan["instances"]] == [None, None]
    out = box.run("--dry-run", "--config", path)
    assert out.stdout.count("budget type cost: not enforced: max_tokens_per_command of 2") == 1


def test_pre_commands_are_turns_and_compact_only_continues(box: Sandbox) -> None:
    """It joins /clear, /compact, pre_commands and the command into one '; ' prompt; ours
    sends each as a turn of one session, and /compact only to a session being continued."""
    plan = dry_json(box, "--config", str(FIXTURES / "review_workflow.json"))
    first, second = plan["instances"]
    assert first["stdin_turns"] == [
        "/clear",
        "Set context: I am performing a security-focused code review",
        "/security-audit all code changes; Check for injection and auth issues",
    ]
    assert "/compact" not in first["stdin_turns"]
    assert first["session_source"] == second["session_source"] == "name"
    # max_tokens_per_command is the instance's own budget (it made it a per-command one)
    assert (first["token_budget"], second["token_budget"]) == (15000, 12000)


# --- direct mode ---------------------------------------------------------------------------


def test_direct_mode_dry_runs_in_both_forms(box: Sandbox) -> None:
    for form in ([], ["run"]):
        plan = dry_json(box, *form, "/analyze src", "--instance-name", "a", "--session-id", "s1")
        (inst,) = plan["instances"]
        assert plan["config"] == "(command line)"
        assert (inst["name"], inst["session_source"]) == ("a", "name")
        assert inst["argv"][-2:] == ["--", "/analyze src"]
    plain = dry_json(box, "run", "fix the flaky test", "--clear-history")
    assert plain["instances"][0]["name"] == "fix-the-flaky-test"  # it: direct-<cmd>-<random>


def test_direct_mode_with_a_config_runs_the_command_under_its_settings(box: Sandbox) -> None:
    """As it does: the command replaces the config's instances; the config's budget (and
    our orchestration block) still apply; said once."""
    path = str(FIXTURES / "budget_block.json")
    plan = dry_json(box, "run", "/analyze more", "--config", path)
    assert [i["command_line"].endswith("'/analyze more'") for i in plan["instances"]] == [True]
    assert plan["budget"]["overall_tokens"] == 200000 and plan["budget"]["mode"] == "block"
    out = box.run("--dry-run", "/analyze more", "--config", path)
    assert out.stdout.count(f"the command given replaces the 3 instance(s) of {path}") == 1


def test_direct_mode_runs_one_instance_to_the_end(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    replay = tmp_path / "direct.replay.json"
    lines = lines_of(init(), api_response("m-d", 300, 40), result(usage(300, 40), cost=0.02))
    replay.write_text(json.dumps([{"lines": lines}]))
    output = tmp_path / "results.json"
    env = {**box.env(), "REPLAY_SCRIPT": str(replay)}
    out = box.run(
        "/analyze src", "--instance-name", "direct", "--no-db", "--skip-command-check",
        "--output", str(output), "--startup-delay", "0", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    results = json.loads(output.read_text())
    (inst,) = results["instances"]
    assert (inst["name"], inst["command"], inst["status"]) == (
        "direct",
        "/analyze src",
        "completed",
    )
    assert (inst["input_tokens"], inst["output_tokens"], inst["total_tokens"]) == (300, 40, 340)
    assert results["config"] == "(command line)"


# --- its console verbosity ---------------------------------------------------------------


def _run_levels(tmp_path: Path, *flags: str) -> tuple[str, str]:
    tmp_path.mkdir()
    box = Sandbox(tmp_path)
    replay = script(tmp_path, "v", "m-v", 10, 5)
    out = box.run(
        "run", "work now", "--no-db", "--output", str(tmp_path / "r.json"),
        "--startup-delay", "0", "--log-file", str(tmp_path / "log.jsonl"), *flags,
        env={**box.env(), "REPLAY_SCRIPT": str(replay)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, out.stderr


def test_log_level_silent_concise_detailed(tmp_path: Path) -> None:
    silent, _ = _run_levels(tmp_path / "s", "--log-level", "silent")
    concise, concise_err = _run_levels(tmp_path / "c")
    _, detailed_err = _run_levels(tmp_path / "d", "--verbose")
    assert "total tokens=" in concise and "total tokens=" not in silent  # no report
    assert silent.strip().splitlines()[-1].startswith("orch-")  # the summary only
    assert "instance started" not in concise_err
    assert "instance started" in detailed_err  # info log lines, off a terminal
    debug = [
        json.loads(x)["level"] for x in (tmp_path / "d" / "log.jsonl").read_text().splitlines()
    ]
    assert "info" in debug


# --- bad input in the new fields and flags: one line, exit 2, nothing launched -------------

GO = {"name": "a", "command": "go"}

BAD_CONFIGS: list[tuple[str, Any, list[str]]] = [
    ("command and prompt", {"instances": [{**GO, "prompt": "p"}]}, ["instances[0]", "not both"]),
    ("blank prompt", {"instances": [{"prompt": " "}]}, ["instances[0]", "prompt must be"]),
    (
        "neither",
        {"instances": [{"name": "a"}]},
        ["instances[0].command", "required field is missing (give command, or prompt)"],
    ),
    (
        "unknown budget type",
        {"budget": {"budget_type": "dollars"}, "instances": [GO]},
        ["budget.budget_type = 'dollars'", "'tokens', 'cost' or 'mixed'"],
    ),
    (
        "unknown enforcement mode",
        {"budget": {"enforcement_mode": "stop"}, "instances": [GO]},
        ["budget.enforcement_mode = 'stop'"],
    ),
    (
        "string for a bool",
        {"budget": {"disable_visuals": "yes"}, "instances": [GO]},
        ["budget.disable_visuals = 'yes'"],
    ),
    (
        "float for tokens",
        {"budget": {"command_budgets": {"/a": 1.5}}, "instances": [GO]},
        ["budget.command_budgets./a = 1.5"],
    ),
    (
        "both blocks disagree",
        {
            "budget": {"overall_cost_budget": 2},
            "orchestration": {"budget": {"overall_cost_usd": 3}},
            "instances": [GO],
        },
        ["budget.overall_cost_budget = 2", "orchestration.budget.overall_cost_usd = 3"],
    ),
    ("unknown budget field", {"budget": {"overal_budget": 5}, "instances": [GO]}, ["unknown"]),
    (
        "a top-level key it would ignore",
        {"Description": "not a comment", "instances": [GO]},
        ["Description = 'not a comment': unknown field"],
    ),
    ("output format", {"instances": [{**GO, "output_format": "text"}]}, ["output_format"]),
]


@pytest.mark.parametrize(
    ("data", "fragments"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_one_line(box: Sandbox, data: Any, fragments: list[str]) -> None:
    path = box.config(data)
    for args in (["--dry-run", "--config", str(path)], ["run", "--config", str(path), "--no-db"]):
        assert_refused(box.run(*args), f"{path}: ", *fragments)
    assert not box.marker.exists()


BAD_FLAGS: list[tuple[str, list[str], list[str]]] = [
    ("log level", ["--log-level", "loud"], ["--log-level", "'loud'"]),
    ("budget type", ["--budget-parameter-type", "usd"], ["--budget-parameter-type"]),
    ("output format", ["--output-format", "text"], ["--output-format"]),
    ("budget name", ["--command-budget", "a b=5"], ["--command-budget 'a b=5'"]),
    ("budget list", ["--command-budget", "/a=1,/b"], ["--command-budget '/a=1,/b'"]),
    ("direct flag alone", ["--session-id", "s"], ["--session-id belongs to direct mode"]),
    ("blank command", [" "], ["the command ' '", "blank"]),
    ("session id", ["/x", "--session-id", "a b"], ["--session-id 'a b'"]),
    ("a mistyped subcommand", ["stauts"], ["No such command 'stauts'"]),
]


@pytest.mark.parametrize(
    ("args", "fragments"), [c[1:] for c in BAD_FLAGS], ids=[c[0] for c in BAD_FLAGS]
)
def test_bad_flag_is_one_line(box: Sandbox, args: list[str], fragments: list[str]) -> None:
    config = box.config({"instances": [GO]})
    if args[0] == " ":
        out = box.run("run", *args, "--no-db")
    elif args[0] in {"/x", "stauts"}:
        out = box.run(*args, "--no-db") if args[0] == "stauts" else box.run("run", *args)
    else:
        out = box.run("run", "--config", str(config), "--no-db", *args)
    assert_refused(out, *fragments)
    assert not box.marker.exists()
    assert not os.path.exists(box.root / "results.json")
