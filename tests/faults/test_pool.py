"""The pool: entries built from each real claude instance's stream (files written, commands
and tests run, milestones, summaries) and from the ``pool`` blocks it writes itself, stored
in real Postgres and read by ``coordinator pool`` from another process; secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.claude, pytest.mark.postgres]

SECRET = "s3cr3t-value-4711"
POOL_BLOCK = (
    "Done.\n```pool\nINSTANCE: alpha\nACTION: completed\nTOPIC: app skeleton\n"
    "SUMMARY: app.py and its test are in place\nAFFECTS: src/app.py, test_app.py\n"
    "BLOCKS: none\n```\nPROGRESS: 100%"
)
BAD_BLOCK = "Also:\n```pool\nACTION: finished\nTOPIC: x\nSUMMARY: y\n```"
TEST_FILE = "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n"


def coordinator(
    tmp_path: Path, args: list[str], timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "COORDINATOR_"))}
    env |= {"HOME": str(tmp_path / "home"), "COORDINATOR_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_offline(
    tmp_path: Path,
    config: dict[str, Any],
    script: dict[str, Any],
    dsn: str | None,
    *extra: str,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    script_path = tmp_path / "script.json"
    script_path.write_text(json.dumps(script))
    results = tmp_path / "results.json"
    db = ["--database-url", dsn] if dsn else ["--no-db"]
    done = coordinator(
        tmp_path,
        [
            "run",
            "--config",
            str(config_path),
            "--offline",
            "--offline-script",
            str(script_path),
            *db,
            "--output",
            str(results),
            *extra,
        ],
    )
    assert results.exists(), done.stderr
    loaded: dict[str, Any] = json.loads(results.read_text())
    return done, loaded


def alpha_script() -> dict[str, Any]:
    return {
        "responses": [
            {
                "tool_uses": [
                    {
                        "name": "Write",
                        "input": {"file_path": "src/app.py", "content": "x = 1\n"},
                    },
                    {"name": "Write", "input": {"file_path": "test_app.py", "content": TEST_FILE}},
                ]
            },
            {"tool_uses": [{"name": "Bash", "input": {"command": f"echo {SECRET} > seen.txt"}}]},
            {"tool_uses": [{"name": "Bash", "input": {"command": "python3 -m unittest -q"}}]},
            {"text": POOL_BLOCK + "\n" + BAD_BLOCK},
        ]
    }


CONFIG: dict[str, Any] = {
    "orchestration": {"id": "orch-pool-1", "startup_delay": 0, "workspace": "ws"},
    "instances": [
        {
            "name": "alpha",
            "command": "build the app",
            "allowed_tools": ["Bash", "Write"],
            "env": {"API_TOKEN": SECRET},
        }
    ],
}


def test_entries_from_the_stream_and_pool_blocks_in_postgres(tmp_path: Path, pg_dsn: str) -> None:
    (tmp_path / "ws").mkdir()
    done, results = run_offline(
        tmp_path, CONFIG, {"conversations": {"alpha": alpha_script()}}, pg_dsn
    )
    assert done.returncode == 0, done.stderr
    entries = results["pool"]["entries"]
    got = [(e["kind"], e["action"], e["summary"]) for e in entries]
    assert ("file", "wrote", "src/app.py") in got
    assert ("file", "wrote", "test_app.py") in got
    assert ("command", "ran", "echo *** > seen.txt") in got  # the config env value masked
    assert ("test", "passed", "python3 -m unittest -q") in got
    declared = [e for e in entries if e["kind"] == "declared"]
    assert declared == [
        {
            "instance": "alpha",
            "kind": "declared",
            "action": "completed",
            "topic": "app skeleton",
            "summary": "app.py and its test are in place",
            "affects": ["src/app.py", "test_app.py"],
            "blocks": [],
            "at_unix": declared[0]["at_unix"],
        }
    ]
    notes = [e["summary"] for e in entries if e["kind"] == "note"]
    assert notes == ["ACTION 'finished' is not one of completed, researched, blocked"]
    assert [s for k, _, s in got if k == "milestone"] == ["30%", "50%", "70%", "90%"]
    assert [e["kind"] for e in entries][-1] == "summary"
    assert SECRET not in json.dumps(results)

    # another process reads them from Postgres
    listed = coordinator(tmp_path, ["pool", "--since", "1h", "--database-url", pg_dsn, "--json"])
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["orchestration_id"] == "orch-pool-1"
    assert [(e["kind"], e["summary"]) for e in doc["entries"]] == [
        (e["kind"], e["summary"]) for e in entries
    ]
    text = coordinator(
        tmp_path, ["pool", "orch-pool-1", "--instance", "alpha", "--database-url", pg_dsn]
    )
    assert text.returncode == 0, text.stderr
    assert "alpha wrote: src/app.py" in text.stdout
    assert "alpha completed [app skeleton]: app.py and its test are in place" in text.stdout
    assert SECRET not in text.stdout
    other = coordinator(tmp_path, ["pool", "--instance", "nobody", "--database-url", pg_dsn])
    assert other.returncode == 0 and "0 entries" in other.stdout


@pytest.mark.parametrize("since", ["1x", "", "h", "-1h", "0m"])
def test_a_bad_since_is_one_line_and_exit_2(tmp_path: Path, since: str) -> None:
    done = coordinator(tmp_path, ["pool", "--since", since], timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--since" in lines[0], done.stderr


async def test_sharing_sends_the_first_instances_entries_in_the_seconds_later_turn(
    tmp_path: Path,
) -> None:
    """With ``pool.share``, beta's second turn (held by lockstep until alpha finished its
    turn) carries the digest of alpha's entries: asserted on the request the model server
    received."""
    from coordinator.engine.state import Status
    from tests.e2e.harness import offline_plan
    from tests.e2e.harness import run_offline as run_with_server

    config = {
        "orchestration": {"pool": {"share": True}, "sync": {"mode": "lockstep"}},
        "instances": [
            {"name": "alpha", "command": "write the app", "allowed_tools": ["Write"]},
            {
                "name": "beta",
                "pre_commands": ["look around"],
                "command": "then work",
                "allowed_tools": ["Write"],
                "workspace": "beta",
            },
        ],
    }
    script = {
        "conversations": {
            "alpha": {
                "responses": [
                    {
                        "tool_uses": [
                            {
                                "name": "Write",
                                "input": {"file_path": "src/app.py", "content": "x = 1\n"},
                            }
                        ]
                    },
                    {"text": "app written"},
                ]
            },
            "beta": {"responses": [{"text": "looked"}, {"text": "worked"}]},
        }
    }
    plan = offline_plan(tmp_path, config, "orch-pool-share")
    _orch, outcome, server = await run_with_server(plan, script, tmp_path / "home", guardian=False)
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
    later = [r for r in server.requests if r.key == "beta" and "then work" in r.last_user_text]
    assert later, [r.last_user_text[:200] for r in server.requests if r.key == "beta"]
    text = later[0].last_user_text
    assert "[coordinator pool] What the other instances did since you last heard" in text
    assert "- alpha wrote: src/app.py" in text
    assert "- alpha completed: app written" in text
    # alpha never hears of beta's first turn before its own only turn, nor of itself
    alpha_texts = " ".join(r.last_user_text for r in server.requests if r.key == "alpha")
    assert "- alpha " not in alpha_texts
    sent = outcome.pool["digests_sent"]
    assert isinstance(sent, dict) and sent["beta"] >= 1
