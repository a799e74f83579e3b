"""A run persisted to real Postgres, read back by `coordinator status` / `history` from
another process, as a second terminal or host would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.helpers import REPLAY, write_script
from tests.unit.streams import api_response, result, usage

pytestmark = pytest.mark.postgres


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_status_and_history_read_the_run_back(tmp_path: Path, pg_dsn: str) -> None:
    lines = [
        raw.decode().rstrip("\n")
        for raw in api_response("m1", 100, 20, cr=30, cc=4, texts=("PROGRESS: 60%",))
    ]
    script = write_script(
        tmp_path / "ok.replay.json",
        [{"lines": [*lines, result(usage(100, 20, 30, 4)).decode().rstrip()]}],
    )
    bad = write_script(tmp_path / "bad.replay.json", [{"exit": 4}])
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"startup_delay": 0, "progress_instructions": False},
                "instances": [
                    {"name": "ok", "command": "go", "env": {"REPLAY_SCRIPT": str(script)}},
                    {"name": "bad", "command": "go", "env": {"REPLAY_SCRIPT": str(bad)}},
                ],
            }
        )
    )
    run = cli(
        "run",
        "--config",
        str(config),
        "--claude-bin",
        REPLAY,
        "--database-url",
        pg_dsn,
        "--workspace",
        str(tmp_path),
        "--orchestration-id",
        "db-readback",
        "--output",
        str(tmp_path / "r.json"),
    )
    assert run.returncode == 1, run.stderr  # one instance failed

    status = cli("status", "db-readback", "--json", "--database-url", pg_dsn)
    assert status.returncode == 0, status.stderr
    snap = json.loads(status.stdout)
    assert snap["orchestration"]["status"] == "failed"
    by = {i["name"]: i for i in snap["instances"]}
    assert by["ok"]["status"] == "completed" and by["ok"]["total_tokens"] == 154
    assert by["bad"]["status"] == "failed" and by["bad"]["exit_code"] == 4
    latest = {p["scenario_id"]: p["milestone_name"] for p in snap["progress"]}
    assert latest["ok"] == "completed"

    table = cli("status", "--database-url", pg_dsn)  # newest run by default
    assert table.returncode == 0 and "db-readback" in table.stdout and "ok" in table.stdout

    history = cli("history", "--json", "--database-url", pg_dsn)
    assert [o["id"] for o in json.loads(history.stdout)["orchestrations"]] == ["db-readback"]

    missing = cli("status", "nope", "--database-url", pg_dsn)
    assert missing.returncode == 2 and "not found" in missing.stderr
