"""Secrets never persist or print: a claude (the replay stand-in, then the real pinned CLI
against the offline server) and its tools echo secrets on stdout text, on stderr and in an
error, and every one of them is absent from the run's stdout and stderr, the results JSON,
the log file, the Postgres rows, ``status --json`` and the dry run."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.db.embedded import run_isolated
from coordinator.db.postgres import connect
from coordinator.redact import MASK
from tests.e2e.harness import base_env
from tests.engine.helpers import REPLAY

ROOT = Path(__file__).resolve().parents[2]
# Every row the run wrote, as text (fixed queries, one per table the run writes).
DUMPS = (
    "SELECT row_to_json(t)::text AS j FROM orchestrations t",
    "SELECT row_to_json(t)::text AS j FROM instances t",
    "SELECT row_to_json(t)::text AS j FROM scenario_orchestration_checkpoints t",
    "SELECT row_to_json(t)::text AS j FROM pool_entries t",
)


def make_secrets() -> dict[str, str]:
    tag = secrets.token_hex(8)
    return {
        "api_key": f"sk-ant-api03-{tag}AAAA",
        "oauth": f"oauth-token-{tag}",
        "db_password": f"dbpw{tag}",
        "config_plain": f"plain-config-value-{tag}",  # a config env value, not secret-named
        "instance_plain": f"instance-value-{tag}",
        "github": f"ghp_{tag}{tag}abcd",  # in no env at all: a key shape
    }


def coordinator(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_env(tmp_path: Path, s: dict[str, str]) -> dict[str, str]:
    return {
        **base_env(),
        "ANTHROPIC_API_KEY": s["api_key"],
        "CLAUDE_CODE_OAUTH_TOKEN": s["oauth"],
        # A DB password in the environment (the run itself uses --database-url).
        "DATABASE_URL": f"postgresql://app:{s['db_password']}@127.0.0.1:1/none",
        "HOME": str(tmp_path / "home"),
        "COORDINATOR_STATE_DIR": str(tmp_path / "state"),
    }


def database_text(dsn: str) -> str:
    async def dump() -> str:
        conn = await connect(dsn)
        try:
            rows = []
            for query in DUMPS:
                rows += await conn.fetch(query)
            return "\n".join(r["j"] for r in rows)
        finally:
            await conn.close()

    return run_isolated(dump())


def assert_nowhere(s: dict[str, str], places: dict[str, str]) -> None:
    for where, text in places.items():
        for name, value in s.items():
            assert value not in text, f"{name} leaked into {where}"


def leaky_script(s: dict[str, str]) -> list[dict[str, Any]]:
    """claude as a leaky tool would make it: secrets in assistant text, a non-json stdout
    line, stderr, and the error text of its result."""
    text = f"The key is {s['api_key']} and the setting {s['config_plain']}"
    return [
        {
            "lines": [
                {
                    "type": "assistant",
                    "message": {
                        "id": "msg_1",
                        "model": "claude-sonnet-4-5",
                        "role": "assistant",
                        "content": [{"type": "text", "text": text}],
                        "usage": {"input_tokens": 10, "output_tokens": 1},
                    },
                    "session_id": "s",
                },
                f"plain stdout {s['instance_plain']} {s['oauth']} {s['github']}",
            ]
        },
        {"stderr": [f"warning: using {s['api_key']}", f"db {s['db_password']} token {s['oauth']}"]},
        {
            "lines": [
                {
                    "type": "result",
                    "subtype": "error_during_execution",
                    "is_error": True,
                    "result": f"failed: could not use {s['config_plain']} / {s['instance_plain']}",
                    "num_turns": 1,
                    "session_id": "s",
                    "usage": {"input_tokens": 10, "output_tokens": 3},
                }
            ]
        },
        {"exit": 1},
    ]


@pytest.mark.postgres
def test_replayed_claude_echoing_secrets_leaks_nothing(tmp_path: Path, pg_dsn: str) -> None:
    s = make_secrets()
    script = tmp_path / "leaky.json"
    script.write_text(json.dumps(leaky_script(s)))
    dies = tmp_path / "dies.json"  # exits before any result, its stderr names a secret
    dies.write_text(json.dumps([{"stderr": [f"fatal: bad key {s['api_key']}"]}, {"exit": 3}]))
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {
                    "id": "secrets-replay",
                    "startup_delay": 0,
                    "env": {"PLAIN_SETTING": s["config_plain"]},
                },
                "instances": [
                    {
                        "name": "leaky",
                        "command": "go",
                        "env": {"REPLAY_SCRIPT": str(script), "REGION": s["instance_plain"]},
                    },
                    {"name": "dies", "command": "go", "env": {"REPLAY_SCRIPT": str(dies)}},
                ],
            }
        )
    )
    env = run_env(tmp_path, s)
    results = tmp_path / "results.json"
    log = tmp_path / "coordinator.jsonl"
    common = ["--config", str(config), "--claude-bin", REPLAY, "--database-url", pg_dsn]
    out = coordinator(
        "run", *common, "--output", str(results), "--log-file", str(log), env=env, cwd=tmp_path
    )
    assert out.returncode == 1, out.stderr
    data = json.loads(results.read_text())
    by = {i["name"]: i for i in data["instances"]}
    # The text got through, with the secrets masked (so the checks below can fail).
    assert by["leaky"]["error"].startswith("error_during_execution: failed: could not use ***")
    assert by["leaky"]["stderr_tail"] == [f"warning: using {MASK}", f"db {MASK} token {MASK}"]
    assert by["dies"]["error"] == f"exited with code 3 before its result: fatal: bad key {MASK}"
    status = coordinator(
        "status", "secrets-replay", "--json", "--database-url", pg_dsn, env=env, cwd=tmp_path
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["orchestration"]["config"]["orchestration"]["env"] == {
        "PLAIN_SETTING": MASK
    }
    dry = coordinator("--dry-run", "--config", str(config), env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    rows = database_text(pg_dsn)
    assert "secrets-replay" in rows and "could not use ***" in rows
    assert_nowhere(
        s,
        {
            "run stdout": out.stdout,
            "run stderr": out.stderr,
            "results": results.read_text(),
            "log file": log.read_text(),
            "postgres rows": rows,
            "status --json": status.stdout,
            "dry run": dry.stdout + dry.stderr,
        },
    )


@pytest.mark.claude
@pytest.mark.postgres
@pytest.mark.skipif(
    not os.access(PROJECT_LOCAL, os.X_OK), reason=f"pinned claude CLI not at {PROJECT_LOCAL}"
)
def test_real_claude_whose_tool_echoes_secrets_leaks_nothing(tmp_path: Path, pg_dsn: str) -> None:
    s = make_secrets()
    # The model runs a Bash tool that prints the secrets of its environment on stdout and
    # stderr, then says one in its text, then the API fails with one in its message.
    echo = 'echo "$PLAIN_SETTING $REGION"; echo "$ANTHROPIC_API_KEY" >&2; exit 3'
    offline = tmp_path / "offline.json"
    offline.write_text(
        json.dumps(
            {
                "conversations": {
                    "leaky": {
                        "responses": [
                            {"tool_uses": [{"name": "Bash", "input": {"command": echo}}]},
                            {"text": f"I saw {s['config_plain']} and {s['instance_plain']}"},
                            {
                                "error": {
                                    "status": 401,
                                    "message": f"invalid key {s['api_key']} for {s['github']}",
                                    "should_retry": False,
                                }
                            },
                        ]
                    }
                }
            }
        )
    )
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {
                    "id": "secrets-claude",
                    "startup_delay": 0,
                    "env": {"PLAIN_SETTING": s["config_plain"]},
                },
                "instances": [
                    {
                        "name": "leaky",
                        "command": "run the check",
                        "allowed_tools": ["Bash"],
                        "steps": ["and now report"],
                        "env": {"REGION": s["instance_plain"]},
                    }
                ],
            }
        )
    )
    env = run_env(tmp_path, s)
    (tmp_path / "home").mkdir()
    results = tmp_path / "results.json"
    log = tmp_path / "coordinator.jsonl"
    out = coordinator(
        "run",
        "--config",
        str(config),
        "--offline",
        "--offline-script",
        str(offline),
        "--database-url",
        pg_dsn,
        "--output",
        str(results),
        "--log-file",
        str(log),
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    data = json.loads(results.read_text())
    (leaky,) = data["instances"]
    assert leaky["status"] == "failed", (out.stdout, out.stderr)
    assert "API 401" in leaky["error"] and MASK in leaky["error"], leaky["error"]
    assert leaky["tool_calls"] == {"Bash": 1}
    rows = database_text(pg_dsn)
    assert "secrets-claude" in rows
    assert_nowhere(
        s,
        {
            "run stdout": out.stdout,
            "run stderr": out.stderr,
            "results": results.read_text(),
            "log file": log.read_text(),
            "postgres rows": rows,
        },
    )
