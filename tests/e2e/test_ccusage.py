"""Acceptance: ccusage, reading the transcripts the real claude CLI wrote during an offline
``coordinator run``, reports the same four token counts as our results JSON.

ccusage ``CCUSAGE_VERSION`` is installed from the npm registry into ``.cache/ccusage/``
(git-ignored) on first use: it cannot go in package.json, because only its linux-x64
platform package exists for that version, so a lock file that ``npm ci`` accepts cannot be
written. ``--offline`` keeps ccusage from fetching prices; its cost is not compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL, PROJECT_ROOT

pytestmark = pytest.mark.claude

CCUSAGE_VERSION = "20.0.24"  # 20.0.26's platform package is missing from the registry
CCUSAGE_ROOT = PROJECT_ROOT / ".cache" / "ccusage" / CCUSAGE_VERSION
NPM_INSTALL = ("npm", "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error")
FOUR = {  # ccusage's name -> ours
    "inputTokens": "input_tokens",
    "outputTokens": "output_tokens",
    "cacheCreationTokens": "cache_creation_tokens",
    "cacheReadTokens": "cache_read_tokens",
}


@pytest.fixture(scope="session")
def ccusage() -> Path:
    binary = CCUSAGE_ROOT / "node_modules" / ".bin" / "ccusage"
    if not os.access(binary, os.X_OK):
        CCUSAGE_ROOT.mkdir(parents=True, exist_ok=True)
        (CCUSAGE_ROOT / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--loglevel=error",
                f"ccusage@{CCUSAGE_VERSION}",
            ],
            cwd=CCUSAGE_ROOT,
            stdin=subprocess.DEVNULL,
            check=True,
            timeout=600,
        )
    return binary


def usage(n: int, *, one_hour: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": 30 + n,
        "output_tokens": 70 + 3 * n,
        "cache_creation_input_tokens": 2000 if n == 0 else 150 + n,
        "cache_read_input_tokens": 0 if n == 0 else 2000 + 100 * n,
        "cache_creation": {"ephemeral_1h_input_tokens": one_hour},
    }


def conversation(name: str, rounds: int, one_hour: int) -> dict[str, Any]:
    responses: list[dict[str, Any]] = [
        {
            "text": f"step {n}",
            "tool_uses": [
                {"name": "Write", "input": {"file_path": f"{name}-{n}.txt", "content": "x"}}
            ],
            "usage": usage(n, one_hour=one_hour if n == 0 else 0),
        }
        for n in range(rounds)
    ]
    responses.append({"text": "done", "usage": usage(rounds)})
    return {"responses": responses}


def test_ccusage_reports_our_token_counts(ccusage: Path, tmp_path: Path) -> None:
    if not os.access(PROJECT_LOCAL, os.X_OK):
        pytest.fail("pinned claude missing: run 'make install'")
    home, ws, state = tmp_path / "home", tmp_path / "ws", tmp_path / "state"
    for directory in (home, ws):
        directory.mkdir()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"workspace": str(ws), "startup_delay": 0},
                "instances": [
                    {"name": "alpha", "command": "Write the alpha files."},
                    {"name": "beta", "command": "Write the beta files."},
                ],
            }
        )
    )
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            {
                "conversations": {
                    "alpha": conversation("alpha", 2, one_hour=500),
                    "beta": conversation("beta", 1, one_hour=0),
                }
            }
        )
    )
    results_path = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "COORDINATOR_"))}
    env |= {"HOME": str(home), "COORDINATOR_STATE_DIR": str(state)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "run",
            "--config",
            str(config),
            "--offline",
            "--offline-script",
            str(script),
            "--no-db",
            "--quiet",
            "--output",
            str(results_path),
        ],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(results_path.read_text())
    assert results["counts"] == {"completed": 2}

    report = subprocess.run(
        [str(ccusage), "claude", "session", "--json", "--offline"],
        env=env | {"CLAUDE_CONFIG_DIR": str(home / ".claude"), "NO_COLOR": "1"},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    read = json.loads(report.stdout)

    ours = {k: results["totals"][k] for k in FOUR.values()}
    assert ours["cache_creation_tokens"] > 0 and ours["cache_read_tokens"] > 0
    assert {FOUR[k]: read["totals"][k] for k in FOUR} == ours
    by_session = {s["sessionId"]: s for s in read["sessions"]}
    for inst in results["instances"]:
        session = by_session[results["sessions"][inst["name"]]]
        assert {FOUR[k]: session[k] for k in FOUR} == {k: inst[k] for k in FOUR.values()}
