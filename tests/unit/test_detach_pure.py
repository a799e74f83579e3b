"""The pure pieces of ``run --detach``: the pidfile's text, and the daemon's argv (the
foreground's parsed flags, pinned where re-reading them later would differ)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cli import run_cmd
from coordinator.control.detach import child_argv
from coordinator.control.pidfile import PidInfo, parse, render, waiting_state
from coordinator.errors import CoordinatorError


def test_pidfile_round_trip_with_the_pid_alone_on_the_first_line() -> None:
    info = PidInfo(
        pid=4242,
        orchestration_id="night-1",
        host="box",
        started="2026-12-01T01:00:00+01:00",
        state=waiting_state("2026-12-01T02:00:00+01:00"),
        log_file="/s/logs/coordinator.jsonl",
        results="/w/results.json",
    )
    text = render(info)
    assert text.splitlines()[0] == "4242"
    assert "state: waiting until 2026-12-01T02:00:00+01:00" in text
    assert parse(text, "f") == info
    assert parse(render(info.with_state("running")), "f").state == "running"


@pytest.mark.parametrize("text", ["", "not a pid\n", "\n12\n"])
def test_a_file_that_is_not_a_pidfile_is_named(text: str) -> None:
    with pytest.raises(CoordinatorError, match=r"^f: not a coordinator pidfile"):
        parse(text, "f")


def _parsed(args: list[str]) -> dict[str, object]:
    ctx = run_cmd.make_context("run", args)
    return dict(ctx.params)


def test_the_daemon_gets_the_same_flags_with_id_output_and_start_pinned() -> None:
    given = [
        "--config", "c.json", "--no-db", "--quiet", "--timeout", "1.5",
        "--command-budget", "/a=10", "--command-budget", "/b=20",
        "--start-at", "2am", "--json", "--detach", "--dry-run",
        "--database-url", "postgresql://u:pw@h/db",
    ]  # fmt: skip
    kw = _parsed(given)
    overrides = {
        "orchestration_id": "o-1",
        "output": Path("/r.json"),
        "start_at": "2026-12-02T02:00:00+01:00",
    }
    argv = child_argv(run_cmd.params, kw, overrides)
    assert argv[1:4] == ["-m", "coordinator.cli", "run"]
    assert "postgresql://u:pw@h/db" not in " ".join(argv)  # it goes on the daemon's stdin
    again = _parsed(argv[4:])
    for name in ("detach", "json_output", "dry_run"):
        assert again[name] is False
    assert again["database_url"] is None
    assert again["orchestration_id"] == "o-1"
    assert again["output"] == Path("/r.json")
    assert again["start_at"] == "2026-12-02T02:00:00+01:00"
    same = {
        k for k in kw if k not in {"detach", "json_output", "dry_run", "database_url", *overrides}
    }
    assert {k: again[k] for k in same} == {k: kw[k] for k in same}
    assert again["command_budgets"] == ("/a=10", "/b=20") and again["timeout"] == 1.5


def test_the_daemon_gets_the_python_orchestrators_flags_and_the_direct_command() -> None:
    """Direct mode and the flags added for users of the Python orchestrator survive the
    re-exec: the positional command (after ``--``, so a prompt that starts with '-' stays a
    prompt) and every new option, as the foreground parsed them."""
    given = [
        "-starts with a dash; then /analyze", "--no-db",
        "--log-level", "detailed", "--verbose", "--budget-parameter-type", "cost",
        "--command-budget", "analyze=10", "--command-cost-budget", "fix=1.5",
        "--output-format", "json", "--instance-name", "a", "--instance-description", "d",
        "--session-id", "s1", "--clear-history", "--compact-history", "--detach",
    ]  # fmt: skip
    kw = _parsed([*given[1:], "--", given[0]])
    assert kw["direct_command"] == given[0]
    argv = child_argv(run_cmd.params, kw, {"orchestration_id": "o-1", "output": Path("/r")})
    assert argv[-2:] == ["--", given[0]]
    again = _parsed(argv[4:])
    same = {k for k in kw if k not in {"detach", "orchestration_id", "output"}}
    assert {k: again[k] for k in same} == {k: kw[k] for k in same}
    assert again["direct_command"] == given[0] and again["budget_type"] == "cost"
    assert again["verbosity"] == "detailed" and again["session_id"] == "s1"
    assert again["clear_history"] is True and again["compact_history"] is True
    without = child_argv(run_cmd.params, _parsed(["--config", "c.json"]), {})
    assert "--" not in without
