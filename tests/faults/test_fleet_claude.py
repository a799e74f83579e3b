"""Acceptance of several hosts with the real pinned claude against the offline model server:
three runner processes as three hosts (own HOME, own state dir), one submitted orchestration
in milestone sync spread over them; the sync holds across runners; one runner is SIGKILLed
while its instance waits at a barrier: its instance finishes on another runner (a new
attempt: the transcript is in the dead host's HOME), every instance's tokens are exactly
what the server served, no instance ran twice at once, and no process is left. Then the
barrier across a take-over: the instance rejoins it, and the next milestone waits for it."""

from __future__ import annotations

import json
import os
import signal
import socket
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


def fleet_config(tmp_path: Path, timeout_s: float = 60) -> Path:
    """The three instances in milestone sync, each in its own workspace."""
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
                    "sync": {"mode": "milestone", "timeout_s": timeout_s},
                },
                "instances": instances,
            }
        )
    )
    return config


def start_host(
    tmp_path: Path,
    name: str,
    dsn: str,
    server_url: str,
    *,
    home: Path | None = None,
    argv_prefix: tuple[str, ...] = (),
    **extra: str,
) -> Host:
    """A runner as a host of its own: its state dir and HOME (unless ``home``: shared);
    ``argv_prefix``: e.g. ``ip netns exec NS`` to run it in a network namespace. The
    database URL goes in its environment, not its argv (it may carry a password)."""
    where = tmp_path / "hosts" / name
    user_home = home or where / "home"
    user_home.mkdir(parents=True, exist_ok=True)
    where.mkdir(parents=True, exist_ok=True)
    log = where / "runner.log"
    env = {
        **offline_env(server_url, user_home),
        **coordinator_env(
            where / "state", COORDINATOR_LEASE_S=LEASE_S, COORDINATOR_DATABASE_URL=dsn, **extra
        ),
    }
    env["HOME"] = str(user_home)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv_prefix, *COORDINATOR, "runner", "--name", name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return Host(name, proc, where / "state", log)


def submit_run(tmp_path: Path, config: Path, output: Path, orch_id: str, dsn: str) -> None:
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
            orch_id,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=coordinator_env(
            tmp_path / "submit-state", COORDINATOR_LEASE_S=LEASE_S, COORDINATOR_DATABASE_URL=dsn
        ),
    )
    assert submitter.returncode == 0, submitter.stderr
    assert submitter.stdout.strip() == orch_id


def assert_tokens_exact(got: dict[str, Any], served: Any) -> None:
    """An instance of the results against what the server served it, over every attempt."""
    assert got["status"] == "completed", got
    assert (
        got["input_tokens"],
        got["output_tokens"],
        got["cache_read_tokens"],
        got["cache_creation_tokens"],
    ) == (
        served.input_tokens,
        served.output_tokens,
        served.cache_read_input_tokens,
        served.cache_creation_input_tokens,
    ), got["name"]


def db_now(dsn: str) -> Any:
    """The database server's clock (the barrier rows' clock)."""
    import asyncio

    import asyncpg

    async def read() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT clock_timestamp()")
        finally:
            await conn.close()

    return asyncio.run(read())


def finish_without_overlap(
    tmp_path: Path,
    dsn: str,
    orch_id: str,
    sessions: dict[str, str],
    hosts: list[Host],
    victim: Host,
) -> None:
    """Until every instance completed, sampled all along: never two running copies of one
    instance; then ``coordinator results`` and the surviving runners drain (exit 0)."""
    most = 0
    deadline = time.monotonic() + 240

    def ended() -> bool:
        return all(r["status"] == "completed" for r in instance_rows(dsn, orch_id).values())

    while not ended():
        most = max(most, *(running_copies(s) for s in sessions.values()))
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.1)
    assert most == 1
    done = subprocess.run(
        [*COORDINATOR, "results", orch_id, "--database-url", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(tmp_path / "submit-state"),
    )
    assert done.returncode == 0, done.stderr
    for host in hosts:
        if host is not victim:
            assert host.stop(timeout=60) == 0, host.text()


def test_three_hosts_real_claude_sigkill_one_runner(tmp_path: Path, pg_dsn: str) -> None:
    script = {
        "conversations": {
            n: conversation(d, long_at=50 if n == "fast" else None) for n, d in DELAYS.items()
        }
    }
    config = fleet_config(tmp_path)
    output = tmp_path / "results.json"
    hosts: list[Host] = []
    with serve_in_thread(script) as server:
        try:
            hosts += [start_host(tmp_path, f"h{k}", pg_dsn, server.url) for k in range(3)]
            submit_run(tmp_path, config, output, "fleet-claude", pg_dsn)

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
            # A spare host for the take-over: the others are full (capacity 1) with instances
            # that wait for fast at the next milestone (it is not excused by the lease).
            hosts.append(start_host(tmp_path, "h3", pg_dsn, server.url))
            sessions = {n: r["session_id"] for n, r in before.items()}
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            finish_without_overlap(tmp_path, pg_dsn, "fleet-claude", sessions, hosts, victim)
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
        assert_tokens_exact(by[name], served[name])
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


def barrier_rows(dsn: str, orch_id: str) -> dict[str, Any]:
    """The barrier's rows: arrivals (point, name) -> time, releases point -> (time, timed
    out, missing), participants name -> (state, host)."""
    import asyncio

    import asyncpg

    async def read() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            arrivals = await conn.fetch(
                "SELECT point, name, arrived_at FROM barrier_arrivals WHERE orchestration_id = $1",
                orch_id,
            )
            releases = await conn.fetch(
                "SELECT point, released_at, timed_out, missing FROM barrier_releases "
                "WHERE orchestration_id = $1",
                orch_id,
            )
            people = await conn.fetch(
                "SELECT name, state, host FROM barrier_participants WHERE orchestration_id = $1",
                orch_id,
            )
        finally:
            await conn.close()
        return {
            "arrivals": {(r["point"], r["name"]): r["arrived_at"] for r in arrivals},
            "releases": {
                r["point"]: (r["released_at"], r["timed_out"], list(r["missing"])) for r in releases
            },
            "people": {r["name"]: (r["state"], r["host"]) for r in people},
        }

    return asyncio.run(read())


def fast_in_its_long_tool_and_the_others_at_70(
    tmp_path: Path, dsn: str, orch_id: str, server: Any
) -> bool:
    """fast runs its long tool with its tokens written; mid and slow wait at 70%."""
    row = instance_rows(dsn, orch_id).get("fast")
    served = server.usage_by_key().get("fast")
    arrivals = barrier_rows(dsn, orch_id)["arrivals"]
    return bool(
        row
        and row["status"] == "running"
        and (tmp_path / "fast" / "started.txt").exists()
        and served is not None
        and server.served_count("fast") == 2
        and row["total_tokens"] == served.total
        and ("milestone:70", "mid") in arrivals
        and ("milestone:70", "slow") in arrivals
    )


def test_a_taken_over_instance_rejoins_the_barrier_and_the_next_milestone_waits_for_it(
    tmp_path: Path, pg_dsn: str
) -> None:
    """Three runners (own state dirs, one shared HOME, so the take-over sees the session's
    transcript and continues it) and a spare one for the take-over. ``fast`` passed 30% and
    50% with the others and runs a long tool; ``mid`` and ``slow`` reach 70% and wait for it
    there. Its runner is SIGKILLed: after the lease the spare runner continues it, it
    rejoins the barrier, and 70% is released only after its arrival there (the lease did
    not excuse it); the points it had passed stay passed. The results carry the sync
    section; tokens exact, never two copies, no process left."""
    script = {
        "conversations": {
            n: conversation(d, long_at=50 if n == "fast" else None) for n, d in DELAYS.items()
        }
    }
    config = fleet_config(tmp_path)
    output = tmp_path / "results.json"
    shared_home = tmp_path / "shared-home"
    orch_id = "fleet-rejoin"
    with serve_in_thread(script) as server:
        hosts = [
            start_host(tmp_path, f"h{k}", pg_dsn, server.url, home=shared_home) for k in range(3)
        ]
        try:
            submit_run(tmp_path, config, output, orch_id, pg_dsn)

            wait_for(
                lambda: fast_in_its_long_tool_and_the_others_at_70(
                    tmp_path, pg_dsn, orch_id, server
                ),
                120,
                "mid, slow at 70%",
            )
            before = instance_rows(pg_dsn, orch_id)
            victim = next(h for h in hosts if h.name == before["fast"]["runner"])
            sessions = {n: r["session_id"] for n, r in before.items()}
            # the spare host that takes fast over (the others are full: capacity 1 each)
            hosts.append(start_host(tmp_path, "h3", pg_dsn, server.url, home=shared_home))
            wait_for(lambda: "h3: runner on" in hosts[-1].text(), 30, "h3 to be up")
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            killed_at = db_now(pg_dsn)
            finish_without_overlap(tmp_path, pg_dsn, orch_id, sessions, hosts, victim)
        finally:
            for host in hosts:
                if host.proc.poll() is None:
                    os.killpg(host.proc.pid, signal.SIGKILL)
                    host.proc.wait()
        served = server.usage_by_key()

    results = json.loads(output.read_text())
    by = {i["name"]: i for i in results["instances"]}
    for name in DELAYS:
        assert_tokens_exact(by[name], served[name])
    after = instance_rows(pg_dsn, orch_id)
    assert after["fast"]["claim_epoch"] == 2 and after["fast"]["runner"] == "h3"
    assert "continues its session" in by["fast"]["attempt_log"][0]["then"]
    rows = barrier_rows(pg_dsn, orch_id)
    arrivals, releases = rows["arrivals"], rows["releases"]
    spare = hosts[-1]
    assert rows["people"]["fast"] == ("completed", f"{socket.gethostname()}:{spare.proc.pid}")
    for point in ("milestone:30", "milestone:50"):  # passed before the kill: stay passed
        assert releases[point][0] < killed_at
    at_70 = arrivals[("milestone:70", "fast")]
    released_70, timed_out, missing = releases["milestone:70"]
    assert arrivals[("milestone:70", "mid")] < killed_at  # mid waited from before the kill
    assert at_70 > killed_at  # the take-over's copy arrived there
    assert released_70 >= at_70 and not timed_out and missing == []  # and was waited for
    sync = results["sync"]  # as a one-host run's results
    assert sync["mode"] == "milestone" and sync["timeouts"] == []
    points = {p["point"]: p for p in sync["points"]}
    assert sorted(points["milestone:70"]["arrived"]) == ["fast", "mid", "slow"]
    assert sync["line"] == "Sync points: ✓ 30% ✓ 50% ✓ 70% ✓ 90%"
    assert by["mid"]["wait_s"] > 3.0  # it waited at 70% through the take-over
    assert alive_cmdlines(str(tmp_path)) == []
    for session in sessions.values():
        assert copies_of(session) == []
