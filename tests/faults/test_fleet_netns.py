"""Several hosts as network namespaces: each runner in a namespace of its own (its own HOME
and state dir), reaching Postgres (a TCP server of the test's own, with a password) and the
offline model server over a veth pair on a bridge; the real pinned claude. One orchestration
spreads over the runners, one runner is SIGKILLed, and one host is cut off the network (its
veth down): a genuine partition, the database unreachable from that host only.

Needs root (namespaces); skipped otherwise, with the reason in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.offline.server import serve_in_thread
from tests.engine.helpers import alive_cmdlines
from tests.faults.harness import COORDINATOR, coordinator_env, wait_for
from tests.faults.netns import Lab, lab, netns_unavailable, tcp_postgres
from tests.faults.test_fleet import (
    LEASE_S,
    Host,
    copies_of,
    hosts,
    instance_rows,
    running_copies,
)
from tests.faults.test_fleet_claude import (
    DELAYS,
    assert_tokens_exact,
    barrier_rows,
    conversation,
    db_now,
    fast_in_its_long_tool_and_the_others_at_70,
    fleet_config,
    start_host,
    submit_run,
)

__all__ = ["hosts"]  # the fixture, shared with test_fleet
_why = netns_unavailable()
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.claude,
    pytest.mark.skipif(_why is not None, reason=_why or ""),
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]


def coordinator_in(
    net: Lab | None, k: int, args: list[str], state: Path, dsn: str
) -> subprocess.CompletedProcess[str]:
    """A coordinator command on host ``k`` (its namespace), the database URL in its env."""
    prefix = net.namespaces[k].exec_prefix() if net is not None else ()
    return subprocess.run(
        [*prefix, *COORDINATOR, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(state, COORDINATOR_DATABASE_URL=dsn),
    )


def no_orphans(net: Lab, tmp_path: Path, sessions: dict[str, str]) -> None:
    for ns in net.namespaces:  # nothing left on any host
        assert ns.pids() == [], ns.name
    assert alive_cmdlines(str(tmp_path)) == []
    for session in sessions.values():
        assert copies_of(session) == []


def test_three_namespaced_hosts_over_tcp_real_claude_sigkill_one(
    tmp_path: Path, hosts: list[Host]
) -> None:
    """Three runners in three namespaces (and a spare in a fourth) share a milestone-synced
    run; the runner of ``fast`` is SIGKILLed while the others wait for it at 70%: the spare
    host takes it over (a new attempt: the transcript is in the dead host's HOME), it
    rejoins the barrier, 70% waits for its arrival; tokens exact per instance against what
    the server served, never two copies, no process left in any namespace."""
    script = {
        "conversations": {
            n: conversation(d, long_at=50 if n == "fast" else None) for n, d in DELAYS.items()
        }
    }
    config = fleet_config(tmp_path)
    output = tmp_path / "results.json"
    orch_id = "fleet-netns"
    with (
        lab(4) as net,
        tcp_postgres(net.gateway) as dsn,
        serve_in_thread(script, host=net.gateway) as server,
    ):
        for k in range(3):
            hosts.append(
                start_host(
                    tmp_path,
                    f"h{k}",
                    dsn,
                    server.url,
                    argv_prefix=net.namespaces[k].exec_prefix(),
                )
            )
        submit_run(tmp_path, config, output, orch_id, dsn)

        wait_for(
            lambda: fast_in_its_long_tool_and_the_others_at_70(tmp_path, dsn, orch_id, server),
            120,
            "mid, slow at 70%",
        )
        before = instance_rows(dsn, orch_id)
        assert {r["runner"] for r in before.values()} == {"h0", "h1", "h2"}  # spread
        victim = next(h for h in hosts if h.name == before["fast"]["runner"])
        sessions = {n: r["session_id"] for n, r in before.items()}
        spare = start_host(
            tmp_path, "h3", dsn, server.url, argv_prefix=net.namespaces[3].exec_prefix()
        )
        hosts.append(spare)
        wait_for(lambda: "h3: runner on" in spare.text(), 30, "h3 to be up")
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        killed_at = db_now(dsn)
        most = 0
        deadline = time.monotonic() + 240

        def ended() -> bool:
            return all(r["status"] == "completed" for r in instance_rows(dsn, orch_id).values())

        while not ended():  # sample: never two running copies of one instance
            most = max(most, *(running_copies(s) for s in sessions.values()))
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.1)
        assert most == 1
        done = coordinator_in(None, 0, ["results", orch_id], tmp_path / "submit-state", dsn)
        assert done.returncode == 0, done.stderr
        for host in hosts:
            if host is not victim:
                assert host.stop(timeout=60) == 0, host.text()
        served = server.usage_by_key()
        requests = list(server.requests)
        served_log = list(server.served)
        rows = barrier_rows(dsn, orch_id)
        after = instance_rows(dsn, orch_id)
        no_orphans(net, tmp_path, sessions)

    results = json.loads(output.read_text())
    by = {i["name"]: i for i in results["instances"]}
    for name in DELAYS:  # over every attempt, on every host: exactly what was served
        assert_tokens_exact(by[name], served[name])
    assert after["fast"]["claim_epoch"] == 2 and after["fast"]["runner"] == "h3"
    assert "new attempt from the start" in by["fast"]["attempt_log"][0]["then"]
    # Milestone sync across the namespaces: nobody asked past 30% before all were served it,
    asked = {n: [r.received_at for r in requests if r.key == n and not r.auxiliary] for n in DELAYS}
    got = {n: [s.served_at for s in served_log if s.key == n and s.complete] for n in DELAYS}
    last_30 = max(got[n][0] for n in DELAYS)
    for name in DELAYS:
        assert asked[name][1] > last_30, name
    # and 70% waited for the taken-over instance's arrival (the lease did not excuse it).
    released_70, timed_out, missing = rows["releases"]["milestone:70"]
    at_70 = rows["arrivals"][("milestone:70", "fast")]
    assert at_70 > killed_at and released_70 >= at_70 and not timed_out and missing == []
    assert results["sync"]["line"] == "Sync points: ✓ 30% ✓ 50% ✓ 70% ✓ 90%"


def test_a_partitioned_runner_fences_itself_and_writes_nothing_when_back(
    tmp_path: Path, hosts: list[Host]
) -> None:
    """r0 (namespace 0) runs ``x``'s long tool when its veth goes down: the database is
    unreachable from that host only. It stops its copy at 60% of the lease, before r1
    (namespace 1) takes ``x`` over after the lease; it journals what it could not write.
    The link comes back: r0 writes nothing over r1's row, and its journal, replayed on its
    host, is dropped (its claim's epoch moved). ``x`` completes on r1 with exact tokens;
    never two copies; no process left in any namespace."""
    work = "echo started > started.txt; sleep 30; echo done >> progress.log"
    script = {
        "conversations": {
            "x": {
                "responses": [
                    {
                        "text": "Working. PROGRESS: 50%",
                        "tool_uses": [{"name": "Bash", "input": {"command": work}}],
                        "usage": {"input_tokens": 150, "output_tokens": 70},
                    },
                    {"text": "Finished. PROGRESS: 100%"},
                ]
            }
        }
    }
    (tmp_path / "x").mkdir()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"startup_delay": 0, "workspace": str(tmp_path)},
                "instances": [
                    {
                        "name": "x",
                        "command": "work on x",
                        "workspace": "x",
                        "allowed_tools": ["Bash"],
                        "env": {"ANTHROPIC_CUSTOM_HEADERS": "X-Coordinator-Instance: x"},
                    }
                ],
            }
        )
    )
    output = tmp_path / "results.json"
    orch_id = "fleet-cut"
    with (
        lab(2) as net,
        tcp_postgres(net.gateway) as dsn,
        serve_in_thread(script, host=net.gateway) as server,
    ):
        near, far = net.namespaces
        close = "2"  # s: its final flush, then its journal
        hosts.append(
            start_host(
                tmp_path,
                "r0",
                dsn,
                server.url,
                argv_prefix=near.exec_prefix(),
                COORDINATOR_DB_CLOSE_TIMEOUT=close,
            )
        )
        submit_run(tmp_path, config, output, orch_id, dsn)

        def in_its_long_tool() -> bool:
            row = instance_rows(dsn, orch_id).get("x")
            served = server.usage_by_key().get("x")
            return bool(
                row
                and (row["runner"], row["status"]) == ("r0", "running")
                and (tmp_path / "x" / "started.txt").exists()
                and served is not None
                and row["total_tokens"] == served.total
            )

        wait_for(in_its_long_tool, 120, "x to run its long tool on r0")
        first = instance_rows(dsn, orch_id)["x"]
        session = first["session_id"]
        [old] = [p for p in copies_of(session)]
        hosts.append(start_host(tmp_path, "r1", dsn, server.url, argv_prefix=far.exec_prefix()))
        wait_for(lambda: "r1: runner on" in hosts[1].text(), 30, "r1 to be up")
        near.cut()
        cut_at = time.monotonic()
        most, old_gone_at_take_over = 0, None
        try:
            deadline = time.monotonic() + 60

            def taken_over() -> bool:
                row = instance_rows(dsn, orch_id)["x"]
                return (row["runner"], row["claim_epoch"]) == ("r1", 2)

            while not taken_over():
                most = max(most, running_copies(session))
                old_gone_at_take_over = _gone(old)
                assert time.monotonic() < deadline, "r1 did not take x over"
                time.sleep(0.05)
            taken_after = time.monotonic() - cut_at
            assert old_gone_at_take_over, "r0's copy still ran when r1 took x over"
            wait_for(lambda: "journalled" in hosts[0].text(), 30, "r0 to journal its rows")
        finally:
            near.mend()
        wait_for(
            lambda: "left to its lease" in hosts[0].text() or "copy stopped" in hosts[0].text(),
            60,
            "r0 to leave the job alone",
        )
        while instance_rows(dsn, orch_id)["x"]["status"] != "completed":
            most = max(most, running_copies(session))
            assert time.monotonic() < deadline + 60, "x did not complete on r1"
            time.sleep(0.05)
        assert most <= 1
        # r0's journal, replayed by r0 itself once the database is back, or by the next
        # command on its host, whichever comes first: fenced by the epoch, so dropped.
        replay = coordinator_in(net, 0, ["status", orch_id], hosts[0].state, dsn)
        assert replay.returncode == 0, replay.stderr
        wait_for(
            lambda: (
                "dropped: another runner took it over"
                in replay.stdout + replay.stderr + hosts[0].text()
            ),
            30,
            "r0's journalled rows to be dropped by the epoch",
        )
        row = instance_rows(dsn, orch_id)["x"]
        assert (row["runner"], row["claim_epoch"], row["status"]) == ("r1", 2, "completed")
        done = coordinator_in(None, 0, ["results", orch_id], tmp_path / "submit-state", dsn)
        assert done.returncode == 0, done.stderr
        for host in hosts:
            assert host.stop(timeout=60) == 0, host.text()
        served = server.usage_by_key()
        no_orphans(net, tmp_path, {"x": session})

    print(f"partition: r1 held x {taken_after:.1f}s after the cut (lease {LEASE_S}s)")
    [inst] = json.loads(output.read_text())["instances"]
    assert_tokens_exact(inst, served["x"])
    assert row["total_tokens"] == served["x"].total
    assert "lease not renewed" in hosts[0].text()  # it fenced itself, then the others took it
    assert inst["attempts"] == 2


def _gone(proc: psutil.Process) -> bool:
    """Exited, a zombie, or gone between the two looks (a race, not a failure)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
