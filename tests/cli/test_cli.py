"""The command line as a user meets it: a real subprocess, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def coordinator(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "invalid JSON"),
        (
            '{"instances": [{"command": "x", "permission_mode": "yolo"}]}',
            "instances[0].permission_mode = 'yolo'",
        ),
        ('{"instances": [{"command": "x", "extra": 1}]}', "instances[0].extra = 1: unknown field"),
        (
            '{"instances": [{"command": "x"}], "orchestration": {"budget": {"mode": "maybe"}}}',
            "orchestration.budget.mode = 'maybe'",
        ),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, content: str, fragment: str) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(content)
    for args in (["--dry-run", "--config", str(cfg)], ["run", "--config", str(cfg), "--no-db"]):
        out = coordinator(*args)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and str(cfg) in lines[0] and fragment in lines[0], out.stderr
        assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--command-budget", "/x="], "the number is missing"),
        (["--command-budget", "=5"], "not a slash command"),  # "x=5" is zen's "/x=5"
        (["--command-budget", "/x=abc"], "'abc' is not a number"),
        (["--start-at", "whenever"], "--start-at"),
        (["--budget-enforcement-mode", "strict"], "strict"),
        (["--overall-token-budget", "0"], "0"),
    ],
)
def test_bad_flags_are_one_line_exit_2(args: list[str], fragment: str) -> None:
    out = coordinator("--dry-run", "--config", "configs/demo.json", *args)
    assert out.returncode == 2
    assert fragment in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_dry_run_json_and_start_at(tmp_path: Path) -> None:
    out = coordinator(
        "--dry-run",
        "--config",
        "configs/demo.json",
        "--json",
        "--start-at",
        "2h",
        "--orchestration-id",
        "fixed-id",
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["orchestration_id"] == "fixed-id"
    assert plan["start_at"] is not None
    assert [i["name"] for i in plan["instances"]] == ["simple", "medium", "complex"]
    assert [i["offset_s"] for i in plan["instances"]] == [0.0, 1.0, 2.0]
    start = datetime.fromisoformat(plan["start_at"])
    launches = [datetime.fromisoformat(i["launch_at"]) for i in plan["instances"]]
    assert [(t - start).total_seconds() for t in launches] == [0.0, 1.0, 2.0]
    for inst in plan["instances"]:
        assert inst["argv"][1:5] == ["-p", "--output-format", "stream-json", "--verbose"]
        assert inst["command_line"].startswith(inst["argv"][0])


def test_dry_run_launches_nothing_and_needs_no_database(tmp_path: Path) -> None:
    out = coordinator(
        "run",
        "--dry-run",
        "--config",
        "configs/demo.json",
        env={"COORDINATOR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
    )
    assert out.returncode == 0, out.stderr
    assert "session" in out.stdout and "--session-id" in out.stdout


def test_missing_slash_command_is_reported_before_launch(tmp_path: Path) -> None:
    (tmp_path / ".claude" / "commands").mkdir(parents=True)
    (tmp_path / ".claude" / "commands" / "maketests.md").write_text("Make tests for $ARGUMENTS")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"instances": [{"command": "/maketest backend"}]}))
    out = coordinator(
        "run",
        "--config",
        str(cfg),
        "--no-db",
        "--workspace",
        str(tmp_path),
        env={"HOME": str(tmp_path)},
    )
    assert out.returncode == 2
    assert "unknown slash command '/maketest'" in out.stderr
    assert "/maketests" in out.stderr  # the close match


def test_root_bypass_without_sandbox_is_refused_up_front(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root is refused")
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps({"instances": [{"command": "x", "permission_mode": "bypassPermissions"}]})
    )
    env = {k: v for k, v in os.environ.items() if k != "IS_SANDBOX"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "run",
            "--config",
            str(cfg),
            "--no-db",
            "--workspace",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "IS_SANDBOX=1" in out.stderr


def test_list_and_inspect_commands(tmp_path: Path) -> None:
    cmds = tmp_path / ".claude" / "commands" / "testing"
    cmds.mkdir(parents=True)
    (cmds / "flakyfinder.md").write_text(
        "---\ndescription: Find flaky tests\nargument-hint: [dir]\n---\nLook in $ARGUMENTS\n"
    )
    env = {"HOME": str(tmp_path)}
    out = coordinator("--list-commands", "--workspace", str(tmp_path), "--json", env=env)
    assert out.returncode == 0, out.stderr
    names = {c["name"] for c in json.loads(out.stdout)}
    assert "testing:flakyfinder" in names
    out = coordinator(
        "--inspect-command", "/testing:flakyfinder", "--workspace", str(tmp_path), env=env
    )
    assert out.returncode == 0 and "$ARGUMENTS" in out.stdout and "Find flaky" in out.stdout
    out = coordinator("--inspect-command", "/flakyfindr", "--workspace", str(tmp_path), env=env)
    assert out.returncode == 2 and "did you mean" in out.stderr
