"""``status``, ``history`` and ``doctor`` leave the embedded server as they found it: one
they had to start is stopped when they end, one that was running keeps running. Real
``coordinator`` processes, a real embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.db.embedded import (
    embedded_server_running,
    ensure_embedded_server,
    pgdata_dir,
    stop_embedded_server,
)
from tests.pg import scratch_state_dir

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "status": ["status"],
    "history": ["history"],
    "doctor": ["doctor", "--json"],
}


def coordinator(args: list[str], state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("COORDINATOR_DATABASE_URL", "DATABASE_URL")
    }
    env.update(
        COORDINATOR_STATE_DIR=str(state_dir),
        ANTHROPIC_API_KEY="x",  # doctor: no login probe through claude
        NO_COLOR="1",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        cwd=state_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_server_the_command_started_is_stopped_after(command: str) -> None:
    with scratch_state_dir() as state_dir:
        out = coordinator(COMMANDS[command], state_dir)
        assert "Traceback" not in out.stderr, out.stderr
        assert (pgdata_dir(state_dir) / "PG_VERSION").is_file()  # it did start one
        assert not embedded_server_running(state_dir), out.stdout + out.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_server_that_was_running_keeps_running(command: str) -> None:
    with scratch_state_dir() as state_dir:
        ensure_embedded_server(state_dir)
        try:
            out = coordinator(COMMANDS[command], state_dir)
            assert "Traceback" not in out.stderr, out.stderr
            assert embedded_server_running(state_dir), out.stdout + out.stderr
        finally:
            stop_embedded_server(state_dir)
