"""The overnight run, end to end: ``coordinator run --detach`` of real claude instances
against the offline model server on real Postgres, then, from other processes while the
run goes on: ``attach`` (left with Ctrl-C, the run untouched), ``pause`` and ``unpause`` of
one instance (its whole process group, tool included, really stopped), ``stop`` of another;
the run finishes by itself with exact tokens, its pidfile gone, and no process left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.offline.server import serve_in_thread
from tests.e2e.test_offline_run import respond
from tests.engine.helpers import alive_cmdlines
from tests.faults.harness import (
    COORDINATOR,
    coordinator,
    coordinator_env,
    process_ended,
    wait_for,
)
from tests.faults.test_control import group_of, statuses

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]


def stopped_group(pid: int) -> bool:
    """Every live process of the group is stopped (a ``sleep`` that ended just before the
    stop stays a zombie: its stopped parent cannot reap it)."""
    live = statuses(group_of(pid)) - {"zombie", "gone"}
    return live == {"stopped"}


def held_tool(workspace: Path) -> dict[str, Any]:
    """A Bash call that says it started, then waits for the test's go."""
    command = f"touch {workspace}/started; while [ ! -f {workspace}/go ]; do sleep 0.1; done"
    return {"name": "Bash", "input": {"command": command, "timeout": 600000}}


def test_a_detached_run_is_watched_paused_and_stopped_from_other_terminals(
    tmp_path: Path, pg_dsn: str
) -> None:
    names = ("alpha", "bravo", "charlie")
    for name in names:
        (tmp_path / name).mkdir()
    script = {
        "conversations": {
            "alpha": {
                "responses": [
                    respond(0, tool=held_tool(tmp_path / "alpha")),
                    respond(1, text="alpha done PROGRESS: 100%"),
                ]
            },
            "bravo": {
                "responses": [
                    respond(0, tool=held_tool(tmp_path / "bravo")),
                    respond(1, text="bravo done"),
                ]
            },
            "charlie": {"responses": [respond(0, text="charlie done PROGRESS: 100%")]},
        }
    }
    config = tmp_path / "night.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"startup_delay": 0, "workspace": str(tmp_path)},
                "instances": [
                    {
                        "name": n,
                        "command": f"work on {n}",
                        "workspace": n,
                        "allowed_tools": ["Bash"],
                        "env": {"ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {n}"},
                    }
                    for n in names
                ],
            }
        )
    )
    state = tmp_path / "state"
    db = ["--database-url", pg_dsn]
    with serve_in_thread(script) as server:
        env = {
            k: v
            for k, v in {
                **coordinator_env(state),
                "ANTHROPIC_BASE_URL": server.url,
                "ANTHROPIC_API_KEY": "offline",
                "HOME": str(tmp_path / "home"),
            }.items()
            if not k.startswith("CLAUDE_CODE_")
        }
        detached = subprocess.run(
            [
                *COORDINATOR,
                "run",
                "--config",
                str(config),
                "--claude-bin",
                str(PROJECT_LOCAL),
                "--output",
                str(tmp_path / "results.json"),
                "--orchestration-id",
                "night",
                "--detach",
                *db,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert detached.returncode == 0, detached.stderr
        assert "coordinator attach night" in detached.stdout
        pidfile = state / "runs" / "night.pid"
        daemon = int(pidfile.read_text().split()[0])

        def other(*args: str) -> subprocess.CompletedProcess[str]:
            return coordinator([*args, *db], state)

        def rows() -> dict[str, dict[str, Any]]:
            shown = other("status", "night", "--json")
            assert shown.returncode == 0, shown.stderr
            return {i["name"]: i for i in json.loads(shown.stdout)["instances"]}

        wait_for(
            lambda: (
                all((tmp_path / n / "started").exists() for n in ("alpha", "bravo"))
                and rows().get("charlie", {}).get("status") == "completed"
            ),
            90,
            "alpha and bravo in their tools, charlie completed",
        )
        sessions = {n: r["session_id"] for n, r in rows().items()}

        # attach from another terminal, then leave it with Ctrl-C
        out = tmp_path / "attach.out"
        with out.open("wb") as sink:
            attach = subprocess.Popen(
                [*COORDINATOR, "attach", "night", *db],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=coordinator_env(state),
            )
        try:
            wait_for(lambda: "attached to night" in out.read_text(), 30, "attach to show")
            attach.send_signal(signal.SIGINT)
            assert attach.wait(timeout=15) == 0, out.read_text()
        finally:
            if attach.poll() is None:
                attach.kill()
                attach.wait()
        assert "left night; it goes on" in out.read_text()

        # pause alpha: its whole group, the waiting Bash loop included, is stopped
        paused = other("pause", "night", "alpha")
        assert paused.returncode == 0 and "alpha: paused" in paused.stdout, paused.stderr
        alpha_pid = rows()["alpha"]["pid"]
        wait_for(lambda: stopped_group(alpha_pid), 10, "alpha's group stopped")
        wait_for(lambda: rows()["alpha"]["status"] == "paused", 10, "alpha shown paused")
        (tmp_path / "alpha" / "go").touch()  # a stopped loop cannot see it
        stopped = other("stop", "night", "bravo")
        assert stopped.returncode == 0 and "bravo: cancelled" in stopped.stdout, stopped.stderr
        assert rows()["alpha"]["status"] == "paused" and not process_ended(daemon)
        unpaused = other("unpause", "night", "alpha")
        assert unpaused.returncode == 0 and "alpha: unpaused" in unpaused.stdout

        try:
            wait_for(lambda: process_ended(daemon), 90, "the detached run to end")
        except AssertionError as timed_out:
            console = state / "runs" / "night.out"
            shown = console.read_text(errors="replace")[-4000:] if console.exists() else "none"
            raise AssertionError(f"{timed_out}; status: {rows()}; console: {shown}") from None
        served = server.usage_by_key()
    results = json.loads((tmp_path / "results.json").read_text())
    insts = {i["name"]: i for i in results["instances"]}
    assert {n: i["status"] for n, i in insts.items()} == {
        "alpha": "completed",
        "bravo": "cancelled",
        "charlie": "completed",
    }
    assert insts["alpha"]["paused_s"] > 0
    for name in ("alpha", "charlie"):
        assert insts[name]["total_tokens"] == served[name].total, name
    assert not pidfile.exists()
    final = other("status", "night", "--json")
    assert json.loads(final.stdout)["orchestration"]["status"] == "failed"  # bravo: cancelled
    for session in sessions.values():
        assert alive_cmdlines(session) == []
