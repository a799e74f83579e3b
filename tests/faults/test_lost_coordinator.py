"""A coordinator killed with SIGKILL (or whose host died) cannot say so: its lease does.
``status`` and ``history`` show the run as ``lost`` with the time it was last seen, not
``running`` with a clock that ticks forever. Real Postgres, a real coordinator process."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.faults.harness import coordinator, start_run, wait_for
from tests.pg import DedicatedServer

pytestmark = pytest.mark.postgres


def test_a_killed_coordinator_shows_as_lost(
    tmp_path: Path, pg_dedicated_server: DedicatedServer
) -> None:
    started = tmp_path / "a.started"
    dsn = pg_dedicated_server.dsn
    run = start_run(
        tmp_path,
        {"a": [{"marker": str(started)}, {"sleep": 600}]},
        args=["--database-url", dsn, "--orchestration-id", "doomed"],
        env={"COORDINATOR_LEASE_S": "1.5"},
    )
    try:
        wait_for(started.exists, 30, "the instance to start")

        def shown() -> dict[str, object]:
            done = coordinator(["status", "doomed", "--json", "--database-url", dsn], run.state_dir)
            assert done.returncode == 0, done.stderr
            orch: dict[str, object] = json.loads(done.stdout)["orchestration"]
            return orch

        # Alive and beating: still running after more than one lease.
        wait_for(lambda: shown()["last_seen_at"] != shown()["started_at"], 10, "a heartbeat")
        assert shown()["status"] == "running"
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=10)
        wait_for(lambda: shown()["status"] == "lost", 10, "the run to show as lost")
        last_seen = shown()["last_seen_at"]
        assert isinstance(last_seen, str) and last_seen > str(shown()["started_at"])
    finally:
        run.wait(timeout=0.1) if run.proc.poll() is None else None

    # COLUMNS: the status cell unwrapped, whatever terminal ran the tests
    table = coordinator(["status", "doomed", "--database-url", dsn], run.state_dir, COLUMNS="200")
    assert "lost: coordinator last seen" in table.stdout, table.stdout
    assert "running" not in table.stdout.split("\n", 1)[0]
    history = coordinator(["history", "--database-url", dsn], run.state_dir, COLUMNS="200")
    assert "lost: coordinator last seen" in history.stdout, history.stdout
