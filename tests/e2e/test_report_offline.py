"""Acceptance: an offline ``coordinator run`` of three scenario tiers through the real
pinned claude, with milestone sync; the comparison in its results JSON, the one
``coordinator report`` makes of that file and the table the run ends with all carry the
run's own per-instance numbers (tokens, cost, times, wait), and the HTML report is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL

pytestmark = pytest.mark.claude

TIERS = (("simple", 1, 0.9), ("medium", 2, 0.85), ("complex", 3, 0.8))


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )


def test_comparison_numbers_are_the_runs_own(tmp_path: Path) -> None:
    if not os.access(PROJECT_LOCAL, os.X_OK):
        pytest.fail("pinned claude missing: run 'make install'")
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    config: dict[str, Any] = {
        "orchestration": {
            "workspace": str(tmp_path / "ws"),
            "create_workspaces": True,
            "startup_delay": 0,
            "sync": {"mode": "milestone", "milestones": [50], "timeout_s": 60},
        },
        "instances": [
            {
                "name": name,
                "command": f"Scenario {name}: write and run a small module.",
                "workspace": name,
                "allowed_tools": ["Bash", "Write"],
                "permission_mode": "acceptEdits",
                "scenario": {
                    "difficulty": name,
                    "complexity_multiplier": mult,
                    "input_size": mult,
                    "time_budget_seconds": 120,
                    "expected_quality": expected,
                },
            }
            for name, mult, expected in TIERS
        ],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "COORDINATOR_"))}
    env |= {"HOME": str(home), "COORDINATOR_STATE_DIR": str(state), "NO_COLOR": "1"}
    env |= {"COLUMNS": "200"}
    results_path = tmp_path / "results.json"
    done = cli(
        ["run", "--config", "config.json", "--offline", "--no-db", "--output", str(results_path)],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(results_path.read_text())
    assert results["counts"] == {"completed": 3}
    instances = {i["name"]: i for i in results["instances"]}
    comp = results["comparison"]
    assert [s["name"] for s in comp["scenarios"]] == ["simple", "medium", "complex"]
    for s in comp["scenarios"]:
        inst = instances[s["name"]]
        assert s["instances"] == [inst["name"]] and s["items"] == 1 and s["completed"] == 1
        assert s["tokens"] == inst["total_tokens"] > 0
        assert s["tokens_per_item"] == inst["total_tokens"]
        assert s["cost_usd"] == pytest.approx(inst["total_cost_usd"], abs=1e-6)
        assert s["duration_s"] == pytest.approx(inst["duration_s"], abs=1e-3)
        assert s["wait_s"] == pytest.approx(inst["wait_s"], abs=1e-3)
        assert s["tool_calls"] == sum(inst["tool_calls"].values()) > 0
        assert s["time_s"] == pytest.approx(
            inst["duration_s"] - inst["wait_s"] - inst["paused_s"], abs=2e-3
        )
        assert s["complexity_multiplier"] == inst["scenario"]["complexity_multiplier"]
        quality = (inst.get("measures") or {}).get("quality") or {}
        assert s["quality"] == quality.get("score")  # None until the run measures quality
    # more complex tiers do more rounds: tokens grow, and the fit says by how much
    tokens_fit = comp["scaling"]["tokens"]
    assert tokens_fit is not None and tokens_fit["exponent"] > 0
    assert [p[1] for p in tokens_fit["points"]] == [
        instances[n]["total_tokens"] for n, _, _ in TIERS
    ]
    # the run ended with the compact table: every tier with its tokens
    for name, _, _ in TIERS:
        line = next(
            row
            for row in done.stdout.splitlines() + done.stderr.splitlines()
            if row.startswith(f"{name} ") and "x" in row
        )
        assert f"{instances[name]['total_tokens']:,}" in line

    page = tmp_path / "report.html"
    report = cli(
        ["report", "--results", str(results_path), "--json", "--html", str(page)], env, tmp_path
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["comparison"] == comp  # the same numbers, recomputed
    assert page.stat().st_size > 1_000_000 and "complex" in page.read_text()
