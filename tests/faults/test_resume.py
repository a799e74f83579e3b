"""``coordinator resume`` after the coordinator was killed with SIGKILL mid-run: the run
shows as ``lost``, the resume takes it over in the same orchestration, relaunches the
instance that did not finish as a second attempt that continues its claude session, leaves
the completed one alone, and ends with every instance's tokens over all attempts exactly
what the model server served. Real claude, real Postgres, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.control.attempts import CONTINUE_PROMPT
from coordinator.offline.server import serve_in_thread
from tests.e2e.test_offline_run import respond
from tests.engine.helpers import alive_cmdlines
from tests.faults.harness import COORDINATOR, coordinator, coordinator_env, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]


def served_total(server: Any, key: str) -> dict[str, int]:
    """The four token counts the server served ``key`` (complete responses), named as the
    results name them."""
    u = server.usage_by_key().get(key)
    assert u is not None, key
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_tokens": u.cache_creation_input_tokens,
        "cache_read_tokens": u.cache_read_input_tokens,
    }


def env_extra(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("ANTHROPIC_") or k == "HOME"}


@pytest.mark.parametrize("isolate", [False, True], ids=["shared-config", "isolated-config"])
def test_a_killed_run_is_resumed_and_finishes_with_exact_tokens(
    tmp_path: Path, pg_dsn: str, isolate: bool
) -> None:
    """With ``isolate_config_dir`` the instance's claude config dir (and so its session's
    transcript) must outlive the killed coordinator for the resume to continue it."""
    started = tmp_path / "slow" / "started.txt"
    script = {
        "conversations": {
            "slow": {
                "responses": [
                    respond(
                        0,
                        tool={
                            "name": "Bash",
                            "input": {"command": f"echo up > {started}; sleep 600"},
                        },
                    ),
                    respond(1, text="finished PROGRESS: 100%"),
                ]
            },
            "quick": {"responses": [respond(0, text="done PROGRESS: 100%")]},
        }
    }
    instances = [
        {
            "name": name,
            "command": f"work on {name}",
            "workspace": name,
            "allowed_tools": ["Bash"],
            "env": {"ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {name}"},
        }
        for name in ("slow", "quick")
    ]
    for name in ("slow", "quick"):
        (tmp_path / name).mkdir()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {
                    "startup_delay": 0,
                    "idle_timeout": 900,
                    "workspace": str(tmp_path),
                    "isolate_config_dir": isolate,
                },
                "instances": instances,
            }
        )
    )
    output = tmp_path / "results.json"
    state = tmp_path / "state"
    with serve_in_thread(script) as server:
        env = {
            **coordinator_env(state, COORDINATOR_LEASE_S="1.5"),
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "offline",
            "HOME": str(tmp_path / "home"),
        }
        env = {k: v for k, v in env.items() if not k.startswith("CLAUDE_CODE_")}
        args = ["--database-url", pg_dsn]
        with (tmp_path / "run.err").open("wb") as err:
            proc = subprocess.Popen(
                [
                    *COORDINATOR,
                    "run",
                    "--config",
                    str(config),
                    "--claude-bin",
                    str(PROJECT_LOCAL),
                    "--output",
                    str(output),
                    "--orchestration-id",
                    "overnight",
                    "--quiet",
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                env=env,
            )
        try:

            def snapshot() -> dict[str, Any]:
                done = coordinator(["status", "overnight", "--json", *args], state)
                assert done.returncode == 0, done.stderr
                data: dict[str, Any] = json.loads(done.stdout)
                return data

            def by_name() -> dict[str, dict[str, Any]]:
                return {i["name"]: i for i in snapshot()["instances"]}

            # mid-run: quick has completed, slow runs its tool, and the database holds the
            # tokens of the response slow is acting on
            def up() -> bool:
                assert proc.poll() is None, (tmp_path / "run.err").read_text()
                return started.exists()

            wait_for(up, 60, "slow's tool to start")
            slow_served = served_total(server, "slow")
            wait_for(
                lambda: (
                    by_name().get("quick", {}).get("status") == "completed"
                    and by_name()["slow"]["total_tokens"] == sum(slow_served.values())
                ),
                30,
                "the rows to catch up",
            )
            # a run its coordinator still owns is not resumed: one line, exit 2
            busy = coordinator(["resume", "overnight", *args], state, 60, **env_extra(env))
            assert busy.returncode == 2, busy.stderr
            assert "overnight is still running on" in busy.stderr
            assert len(busy.stderr.strip().splitlines()) == 1
            unknown = coordinator(["resume", "nosuch", *args], state)
            assert unknown.returncode == 2 and "'nosuch' not found" in unknown.stderr
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            wait_for(lambda: snapshot()["orchestration"]["status"] == "lost", 15, "lost")
            sessions = {name: i["session_id"] for name, i in by_name().items()}
            wait_for(
                lambda: alive_cmdlines(sessions["slow"]) == [], 15, "the guardian to reap slow"
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

        resumed = subprocess.run(
            [*COORDINATOR, "resume", "overnight", "--quiet", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming slow" in resumed.stderr + resumed.stdout

        results = json.loads(output.read_text())
        insts = {i["name"]: i for i in results["instances"]}
        slow, quick = insts["slow"], insts["quick"]
        assert slow["status"] == "completed" and slow["attempts"] == 2, slow
        assert [a["status"] for a in slow["attempt_log"]] == ["lost", "completed"]
        assert quick["status"] == "completed" and quick["attempts"] == 1
        for name, inst in insts.items():  # over every attempt: exactly what was served
            served = served_total(server, name)
            got = {k: inst[k] for k in served}
            assert got == served, name
            assert inst["total_tokens"] == sum(served.values())
        assert slow["tool_calls"] == {"Bash": 1}
        # the server saw slow's conversation continue in the same session: the second
        # attempt sent the earlier messages again, then the continue turn
        requests = [r for r in server.requests if r.key == "slow" and not r.auxiliary]
        assert len(requests) == 2
        assert requests[0].session_id == requests[1].session_id == sessions["slow"]
        assert requests[1].message_count > requests[0].message_count
        assert CONTINUE_PROMPT in requests[1].last_user_text
        assert server.served_count("quick") == 1  # the completed one was not relaunched

    final = json.loads(coordinator(["status", "overnight", "--json", *args], state).stdout)
    assert final["orchestration"]["status"] == "completed"
    rows = {i["name"]: i for i in final["instances"]}
    assert rows["slow"]["attempts"] == 2 and rows["slow"]["status"] == "completed"
    assert rows["slow"]["total_tokens"] == slow["total_tokens"]
    for session in sessions.values():
        assert alive_cmdlines(session) == []
    kept = state / "claude-config" / "overnight"
    assert not kept.exists(), list(kept.iterdir())  # every instance completed: removed
