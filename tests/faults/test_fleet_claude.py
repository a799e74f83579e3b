"""Acceptance of several hosts with the real pinned claude against the offline model server:
three runner processes as three hosts (own HOME, own state dir), one submitted orchestration
in milestone sync spread over them; the sync holds across runners; one runner is SIGKILLed
while its instance waits at a barrier: its instance finishes on another runner (a new
attempt: the transcript is in the dead host's HOME), every instance's tokens are exactly
what the server served, no instance ran twice at once, and no process is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.offline.server import serve_in_thread
from tests.engine.helpers import alive_cmdlines
from tests.faults.harness import COORDINATOR, coordinator_env, wait_for
from tests.faults.test_fleet import LEASE_S, Host, copies_of, instance_rows, running_copies

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]

MILESTONES = (30, 50, 70, 90)
DELAYS = {"fast": 0.05, "mid": 1.0, "slow": 1.6}  # the model's seconds per response


def conversation(delay: float, long_at: int | None = None) -> dict[str, Any]:
    """A response per milestone with a Bash call (0.5 s of work; at ``long_at`` a long
    one that says when it started), then a final answer."""

    def work(pct: int) -> str:
        if pct == long_at:
            return f"echo {pct} > started.txt; sleep 30; echo {pct} >> progress.log"
        return f"sleep 0.5; echo {pct} >> progress.log"

    responses: list[dict[str, Any]] = [
        {
            "text": f"Working. PROGRESS: {pct}%",
            "tool_uses": [{"name": "Bash", "input": {"command": work(pct)}}],
            "delay_s": delay,
            "usage": {"input_tokens": 100 + pct, "output_tokens": 20 + pct},
        }
        for pct in MILESTONES
    ]
    responses.append({"text": "Finished. PROGRESS: 100%", "delay_s": delay})
    return {"responses": responses}


def offline_env(server_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_CODE_")}
    env.update(
        {
            "ANTHROPIC_BASE_URL": server_url,
            "ANTHROPIC_API_KEY": "offline",
            "HOME": str(home),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
    )
    return env


def test_three_hosts_real_claude_sigkill_one_runner(tmp_path: Path, pg_dsn: str) -> None:
    script = {
        "conversations": {
            n: conversation(d, long_at=50 if n == "fast" else None) for n, d in DELAYS.items()
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
        for name in DELAYS
    ]
    for name in DELAYS:
        (tmp_path / name).mkdir()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {
                    "startup_delay": 0,
                    "idle_timeout": 300,
                    "workspace": str(tmp_path),
                    "sync": {"mode": "milestone", "timeout_s": 60},
                },
                "instances": instances,
            }
        )
    )
    output = tmp_path / "results.json"
    hosts: list[Host] = []
    with serve_in_thread(script) as server:
        try:
            for k in range(3):
                home = tmp_path / "hosts" / f"h{k}"
                (home / "home").mkdir(parents=True)
                log = home / "runner.log"
                env = {
                    **offline_env(server.url, home / "home"),
                    **coordinator_env(home / "state", COORDINATOR_LEASE_S=LEASE_S),
                }
                env["HOME"] = str(home / "home")
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [*COORDINATOR, "runner", "--database-url", pg_dsn, "--name", f"h{k}"],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        env=env,
                    )
                hosts.append(Host(f"h{k}", proc, home / "state", log))
            submitter = subprocess.run(
                [
                    *COORDINATOR,
                    "submit",
                    "--config",
                    str(config),
                    "--claude-bin",
                    str(PROJECT_LOCAL),
                    "--output",
                    str(output),
                    "--orchestration-id",
                    "fleet-claude",
                    "--database-url",
                    pg_dsn,
                    "--quiet",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env=coordinator_env(tmp_path / "submit-state", COORDINATOR_LEASE_S=LEASE_S),
            )
            assert submitter.returncode == 0, submitter.stderr
            assert submitter.stdout.strip() == "fleet-claude"

            # The fast one waited at 30% and 50% for the others; released at 50%, it runs a
            # long tool: nothing in flight, its row written. Then its runner dies.
            def fast_in_its_long_tool() -> bool:
                row = instance_rows(pg_dsn, "fleet-claude").get("fast")
                served = server.usage_by_key().get("fast")
                return bool(
                    row
                    and row["status"] == "running"
                    and (tmp_path / "fast" / "started.txt").exists()
                    and served is not None
                    and server.served_count("fast") == 2
                    and row["total_tokens"] == served.total
                )

            wait_for(fast_in_its_long_tool, 120, "fast to run its long tool, tokens written")
            before = instance_rows(pg_dsn, "fleet-claude")
            victim = next(h for h in hosts if h.name == before["fast"]["runner"])
            assert {r["runner"] for r in before.values()} == {"h0", "h1", "h2"}  # spread
            sessions = {n: r["session_id"] for n, r in before.items()}
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            most = 0
            deadline = time.monotonic() + 240

            def ended() -> bool:
                found = instance_rows(pg_dsn, "fleet-claude")
                return all(r["status"] == "completed" for r in found.values())

            while not ended():  # sample: never two running copies of one instance
                most = max(most, *(running_copies(s) for s in sessions.values()))
                assert time.monotonic() < deadline, "the run did not end"
                time.sleep(0.1)
            assert most == 1
            done = subprocess.run(
                [*COORDINATOR, "results", "fleet-claude", "--database-url", pg_dsn],
                capture_output=True,
                text=True,
                timeout=60,
                env=coordinator_env(tmp_path / "submit-state"),
            )
            assert done.returncode == 0, done.stderr
            for host in hosts:
                if host is not victim:
                    assert host.stop(timeout=60) == 0, host.text()
        finally:
            for host in hosts:
                if host.proc.poll() is None:
                    os.killpg(host.proc.pid, signal.SIGKILL)
                    host.proc.wait()
        served = server.usage_by_key()
        requests = list(server.requests)
        served_log = list(server.served)

    results = json.loads(output.read_text())
    by = {i["name"]: i for i in results["instances"]}
    for name in DELAYS:  # over every attempt, on every host: exactly what was served
        u = served[name]
        got = by[name]
        assert got["status"] == "completed", got
        assert (
            got["input_tokens"],
            got["output_tokens"],
            got["cache_read_tokens"],
            got["cache_creation_tokens"],
        ) == (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        ), name
    after = instance_rows(pg_dsn, "fleet-claude")
    assert after["fast"]["claim_epoch"] == 2 and after["fast"]["runner"] != victim.name
    assert after["fast"]["attempts"] == 2
    lost = by["fast"]["attempt_log"][0]
    assert lost["status"] == "lost" and "new attempt from the start" in lost["then"]

    # Milestone sync held across the three runners at 30%: no instance's request after its
    # 30% response came before every instance had been served its 30% response.
    def times(key: str) -> tuple[list[float], list[float]]:
        asked = [r.received_at for r in requests if r.key == key and not r.auxiliary]
        got = [s.served_at for s in served_log if s.key == key and s.complete]
        return asked, got

    last_30 = max(times(n)[1][0] for n in DELAYS)
    for name in DELAYS:
        assert times(name)[0][1] > last_30, name
    assert (tmp_path / "mid" / "progress.log").read_text().split() == ["30", "50", "70", "90"]
    assert by["fast"]["wait_s"] > 0.5  # it did wait for the others, across runners
    assert alive_cmdlines(str(tmp_path)) == []
    for session in sessions.values():  # no claude of any instance left, on any "host"
        assert copies_of(session) == []
