"""``coordinator pause|unpause|stop`` reach a fleet run's instances wherever they are: on
any runner, or not claimed yet (they keep the want: a paused one is not launched when a
runner claims it, a stopped one never is). Two runners, real Postgres, real processes and
signals (SIGSTOP/SIGCONT of the instance's process group), the replay stand-in."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.engine.helpers import alive_cmdlines
from tests.faults.harness import coordinator, wait_for, write_config
from tests.faults.test_fleet import (
    Host,
    copies_of,
    hosts,
    instance_rows,
    slow_answer,
    start_runner,
    submit,
)

pytestmark = [pytest.mark.postgres]
__all__ = ["hosts"]  # the fixture, shared with test_fleet


def control(tmp_path: Path, dsn: str, *args: str) -> tuple[int, str, str]:
    done = coordinator([*args, "--database-url", dsn], tmp_path / "control-state", timeout=90)
    return done.returncode, done.stdout, done.stderr


def stopped(session_id: str) -> bool:
    """Every running process of the instance is SIGSTOPped (and there is one)."""
    procs = copies_of(session_id)
    try:
        return bool(procs) and all(p.status() == psutil.STATUS_STOPPED for p in procs)
    except psutil.Error:
        return False


def test_pause_stop_and_unpause_reach_every_runner_and_the_queue(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Two runners (capacity 1) hold a and b; c waits in the queue. ``pause a c``: a's
    process group is stopped on its runner, c's row is paused. ``stop b``: b ends
    cancelled on its runner, which then claims c and does not launch it (the pause holds).
    ``unpause`` (the whole run): a goes on, c launches; a and c complete with exact
    tokens, b stays cancelled; no process is left."""
    scripts = {
        "a": slow_answer("a", 101, 11, 6.0),
        "b": slow_answer("b", 102, 12, 30.0),
        "c": slow_answer("c", 103, 13, 0.5),
    }
    config = write_config(tmp_path, scripts)
    waiter = submit(tmp_path, config, pg_dsn, "fleet-c", wait=True)
    hosts += [start_runner(tmp_path, f"r{k}", pg_dsn) for k in range(2)]

    def running(*names: str) -> bool:
        found = instance_rows(pg_dsn, "fleet-c")
        return all(found.get(n, {}).get("status") == "running" for n in names)

    wait_for(lambda: running("a", "b"), 60, "a and b to run")
    rows = instance_rows(pg_dsn, "fleet-c")
    assert rows["c"]["status"] == "pending" and rows["c"]["runner"] is None
    sessions = {n: r["session_id"] for n, r in rows.items()}

    rc, out, err = control(tmp_path, pg_dsn, "pause", "fleet-c", "a", "c")
    assert rc == 0, err
    holder = rows["a"]["runner"]
    assert f"a: paused (on runner {holder})" in out, out
    assert "c: paused (not launched until unpaused)" in out, out
    assert stopped(sessions["a"])  # its whole group, on the runner that holds it
    assert instance_rows(pg_dsn, "fleet-c")["c"]["status"] == "paused"  # in the ack's time
    wait_for(  # a's row: written by its runner's engine, as a one-host run writes it
        lambda: instance_rows(pg_dsn, "fleet-c")["a"]["status"] == "paused", 10, "a's row"
    )

    rc, out, err = control(tmp_path, pg_dsn, "stop", "fleet-c", "b")
    assert rc == 0, err
    assert f"b: cancelled (on runner {rows['b']['runner']})" in out, out
    wait_for(
        lambda: instance_rows(pg_dsn, "fleet-c")["c"]["runner"] is not None,
        30,
        "b's runner to claim c",
    )
    wait_for(lambda: instance_rows(pg_dsn, "fleet-c")["b"]["status"] == "cancelled", 30, "b to end")
    assert copies_of(sessions["b"]) == []
    claimed = instance_rows(pg_dsn, "fleet-c")["c"]
    assert claimed["status"] == "paused" and claimed["pid"] is None  # claimed, not launched
    assert copies_of(sessions["c"]) == []

    rc, out, err = control(tmp_path, pg_dsn, "unpause", "fleet-c")
    assert rc == 0, err
    assert "a: unpaused (running)" in out and "c: unpaused (pending)" in out, out
    assert "b: not paused (cancelled)" in out or "b: already cancelled" in out, out
    assert waiter.wait(timeout=90) == 1, (tmp_path / "submit-fleet-c.err").read_text()
    results = json.loads((tmp_path / "results-fleet-c.json").read_text())
    by_name = {i["name"]: i for i in results["instances"]}
    assert by_name["b"]["status"] == "cancelled"
    for name, (inp, outp) in {"a": (101, 11), "c": (103, 13)}.items():
        inst = by_name[name]
        assert inst["status"] == "completed", inst
        assert (inst["input_tokens"], inst["output_tokens"]) == (inp, outp)
    for host in hosts:
        assert host.stop() == 0, host.text()
    assert alive_cmdlines(str(tmp_path)) == []


def test_a_stop_of_the_whole_run_ends_queued_instances_without_a_runner_claiming_them(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """One runner runs a; b and c are not due for an hour. ``stop`` (the whole run): a is
    cancelled on the runner, b and c end in their rows at once; the run ends and its
    results are written although nobody ever claimed b or c."""
    scripts = {n: slow_answer(n, 100, 10, 30.0) for n in ("a", "b", "c")}
    config = write_config(tmp_path, scripts, {"startup_delay": 3600})
    waiter = submit(tmp_path, config, pg_dsn, "fleet-w", wait=True)
    hosts.append(start_runner(tmp_path, "r0", pg_dsn, capacity=3))
    wait_for(
        lambda: instance_rows(pg_dsn, "fleet-w").get("a", {}).get("status") == "running",
        60,
        "a to run",
    )
    rc, out, err = control(tmp_path, pg_dsn, "stop", "fleet-w")
    assert rc == 0, err
    assert "a: cancelled (on runner r0)" in out, out
    assert "b: cancelled (never launched)" in out and "c: cancelled (never launched)" in out
    assert waiter.wait(timeout=60) == 1, (tmp_path / "submit-fleet-w.err").read_text()
    results = json.loads((tmp_path / "results-fleet-w.json").read_text())
    assert {i["name"]: i["status"] for i in results["instances"]} == {
        "a": "cancelled",
        "b": "cancelled",
        "c": "cancelled",
    }
    assert hosts[0].stop() == 0, hosts[0].text()
    assert alive_cmdlines(str(tmp_path)) == []


def test_a_command_to_a_fleet_run_without_a_live_runner_is_one_line_exit_2(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = write_config(tmp_path, {"a": slow_answer("a", 1, 1, 0.1)})
    done = submit(tmp_path, config, pg_dsn, "fleet-n")
    assert done.wait(timeout=60) == 0, (tmp_path / "submit-fleet-n.err").read_text()
    rc, out, err = control(tmp_path, pg_dsn, "pause", "fleet-n")
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        "coordinator: error: orchestration fleet-n: no live runner serves it "
        "(start `coordinator runner`); nothing was sent"
    ], err


def test_resume_of_a_fleet_run_is_refused_in_one_line(tmp_path: Path, pg_dsn: str) -> None:
    """A fleet run is carried on by its runners: a one-host resume would run its instances
    beside them."""
    config = write_config(tmp_path, {"a": slow_answer("a", 1, 1, 0.1)})
    done = submit(tmp_path, config, pg_dsn, "fleet-r")
    assert done.wait(timeout=60) == 0, (tmp_path / "submit-fleet-r.err").read_text()
    rc, _out, err = control(tmp_path, pg_dsn, "resume", "fleet-r")
    assert rc == 2
    assert err.strip().splitlines() == [
        "coordinator: error: orchestration fleet-r is a fleet run: its runners carry its "
        "instances on (start `coordinator runner` on any host); resume is for one-host runs"
    ], err


def test_a_queued_instance_stopped_in_milestone_sync_is_not_waited_for(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Milestone sync (a 120 s timeout): a waits at 30% for b, which is not due for an hour.
    ``stop b`` ends b in its row and in the barrier: a's point opens at once and a
    completes, long before the sync timeout."""
    from tests.faults.harness import answer
    from tests.faults.test_barrier_outage import progress

    scripts: dict[str, list[dict[str, Any]]] = {
        "a": [{"lines": [progress(30)]}, {"lines": answer("m-a", 7, 3)}],
        "b": slow_answer("b", 1, 1, 0.1),
    }
    config = write_config(
        tmp_path, scripts, {"startup_delay": 3600, "sync": {"mode": "milestone", "timeout_s": 120}}
    )
    waiter = submit(tmp_path, config, pg_dsn, "fleet-m", wait=True)
    hosts.append(start_runner(tmp_path, "r0", pg_dsn))
    wait_for(
        lambda: instance_rows(pg_dsn, "fleet-m").get("a", {}).get("status") == "waiting",
        60,
        "a to wait at 30%",
    )
    rc, out, err = control(tmp_path, pg_dsn, "stop", "fleet-m", "b")
    assert rc == 0 and "b: cancelled (never launched)" in out, err + out
    assert waiter.wait(timeout=40) == 1, (tmp_path / "submit-fleet-m.err").read_text()
    results = json.loads((tmp_path / "results-fleet-m.json").read_text())
    by_name = {i["name"]: i for i in results["instances"]}
    assert by_name["a"]["status"] == "completed" and by_name["b"]["status"] == "cancelled"
    point = next(p for p in results["sync"]["points"] if p["point"] == "milestone:30")
    assert point["arrived"] == ["a"] and not point["timed_out"], point
    assert hosts[0].stop() == 0, hosts[0].text()
    assert alive_cmdlines(str(tmp_path)) == []


def test_a_runner_killed_while_its_instances_wait_paused_at_a_barrier_leaves_nothing(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Milestone sync: r0 holds a and b; a waits at 30% (its group SIGSTOPped by the
    barrier), b works towards it. SIGKILL r0: its guardian reaps both groups, the paused
    one too (SIGCONT before SIGTERM, SIGKILL after the grace); no process of either is
    left."""
    from tests.faults.harness import answer
    from tests.faults.test_barrier_outage import progress

    hold = tmp_path / "never"
    scripts: dict[str, list[dict[str, Any]]] = {
        "a": [{"lines": [progress(30)]}, {"lines": answer("m-a", 7, 3)}],
        "b": [{"wait_file": str(hold), "timeout": 300}, {"lines": [progress(30)]}],
    }
    config = write_config(tmp_path, scripts, {"sync": {"mode": "milestone", "timeout_s": 300}})
    submit(tmp_path, config, pg_dsn, "fleet-z")
    hosts.append(start_runner(tmp_path, "r0", pg_dsn, capacity=2))
    wait_for(
        lambda: (
            instance_rows(pg_dsn, "fleet-z").get("a", {}).get("status") == "waiting"
            and instance_rows(pg_dsn, "fleet-z").get("b", {}).get("status") == "running"
        ),
        60,
        "a to wait at 30% and b to run",
    )
    sessions = {n: r["session_id"] for n, r in instance_rows(pg_dsn, "fleet-z").items()}
    wait_for(lambda: stopped(sessions["a"]), 10, "a's group to be stopped at the barrier")
    os.kill(hosts[0].proc.pid, signal.SIGKILL)
    hosts[0].proc.wait()
    wait_for(
        lambda: copies_of(sessions["a"]) == [] and copies_of(sessions["b"]) == [],
        30,
        "the dead runner's guardian to reap both, the paused one too",
    )
    assert alive_cmdlines(str(tmp_path)) == []
