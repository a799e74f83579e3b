"""Control of a running orchestration from another process, through Postgres: pause and
unpause one instance (its whole process group really stops; paused time counts against no
timeout), stop one instance or the whole run, a command to a run whose coordinator is gone,
a coordinator that does not answer, and ``attach``. Real Postgres, a real ``coordinator
run`` process over replay instances; no orphans after any of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

from coordinator.db.embedded import run_isolated
from tests.faults.harness import (
    COORDINATOR,
    CoordinatorRun,
    answer,
    coordinator,
    coordinator_env,
    process_ended,
    start_run,
    wait_for,
)
from tests.pg import DedicatedServer

pytestmark = pytest.mark.postgres


def control(run: CoordinatorRun, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return coordinator([*args, "--database-url", dsn], run.state_dir)


def shown(run: CoordinatorRun, dsn: str, orch_id: str) -> dict[str, Any]:
    done = control(run, dsn, "status", orch_id, "--json")
    assert done.returncode == 0, done.stderr
    snap: dict[str, Any] = json.loads(done.stdout)
    return snap


def instance_status(run: CoordinatorRun, dsn: str, orch_id: str, name: str) -> str | None:
    for row in shown(run, dsn, orch_id)["instances"]:
        if row["name"] == name:
            return str(row["status"])
    return None


def group_of(pid: int) -> list[psutil.Process]:
    pgid = os.getpgid(pid)
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def statuses(procs: list[psutil.Process]) -> set[str]:
    out = set()
    for proc in procs:
        try:
            out.add(proc.status())
        except psutil.Error:
            out.add("gone")
    return out


def no_orphans(results: dict[str, Any]) -> None:
    """Every instance's process is gone (reaped) once the run has ended."""
    for inst in results["instances"]:
        pid = inst["pid"]
        if pid is None:
            continue

        def gone(pid: int = pid) -> bool:
            try:
                return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
            except psutil.NoSuchProcess:
                return True

        wait_for(gone, 10, f"{inst['name']}'s process {pid} to be gone")


def by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in results["instances"]}


def waiting_instance(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """Says it started, waits for its go-ahead file, answers and completes."""
    return [
        {"marker": str(tmp_path / f"{name}.started")},
        {"wait_file": str(tmp_path / f"{name}.go"), "timeout": 120},
        {"lines": answer(f"msg-{name}", 100, 20)},
    ]


def test_pause_one_instance_its_group_stops_and_paused_time_is_not_counted(
    tmp_path: Path, pg_dsn: str
) -> None:
    orch = "ctl-pause"
    run = start_run(
        tmp_path,
        {"a": waiting_instance(tmp_path, "a"), "b": waiting_instance(tmp_path, "b")},
        args=[
            *("--database-url", pg_dsn, "--orchestration-id", orch),
            *("--timeout", "8", "--idle-timeout", "8"),
        ],
    )
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        done = control(run, pg_dsn, "pause", orch, "a")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "a: paused"
        paused_at = time.monotonic()
        (tmp_path / "b.go").touch()  # b goes on and completes meanwhile (before its 8 s)
        wait_for(lambda: instance_status(run, pg_dsn, orch, "a") == "paused", 10, "paused in db")
        table = control(run, pg_dsn, "status", orch)
        assert "paused" in table.stdout, table.stdout
        pid = int(next(i["pid"] for i in shown(run, pg_dsn, orch)["instances"] if i["name"] == "a"))
        group = group_of(pid)
        assert group, "a's process group"
        wait_for(lambda: statuses(group) == {"stopped"}, 10, "a's whole group to be stopped")
        wait_for(lambda: instance_status(run, pg_dsn, orch, "b") == "completed", 30, "b done")
        (tmp_path / "a.go").touch()  # a cannot see it while stopped
        assert statuses(group) == {"stopped"}
        # Paused longer than both the timeout and the idle timeout: neither may fire.
        wait_for(lambda: time.monotonic() - paused_at > 10, 15, "a pause longer than 8 s")
        assert instance_status(run, pg_dsn, orch, "a") == "paused"
        again = control(run, pg_dsn, "pause", "a")  # the first argument: an instance name
        assert again.returncode == 0 and again.stdout.strip() == "a: already paused"
        done = control(run, pg_dsn, "unpause", orch, "a")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "a: unpaused (running)"
        assert run.wait(timeout=60) == 0, run.stderr
    finally:
        ended(run)
    results = run.results()
    a = by_name(results)["a"]
    assert a["status"] == "completed" and by_name(results)["b"]["status"] == "completed"
    assert a["paused_s"] >= 10 and a["duration_s"] > 10
    assert by_name(results)["b"]["paused_s"] == 0
    no_orphans(results)


def test_stop_one_instance_the_others_complete(tmp_path: Path, pg_dsn: str) -> None:
    orch = "ctl-stop-one"
    run = start_run(
        tmp_path,
        {
            "a": [{"marker": str(tmp_path / "a.started")}, {"sleep": 600}],
            "b": waiting_instance(tmp_path, "b"),
        },
        args=["--database-url", pg_dsn, "--orchestration-id", orch],
    )
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        wait_for((tmp_path / "b.started").exists, 30, "b to start")
        unknown = control(run, pg_dsn, "stop", orch, "zed")
        assert unknown.returncode == 2
        assert "no instance named 'zed'" in unknown.stderr and "Traceback" not in unknown.stderr
        paused = control(run, pg_dsn, "pause", orch, "a")  # a stopped group still stops
        assert paused.returncode == 0 and paused.stdout.strip() == "a: paused"
        done = control(run, pg_dsn, "stop", orch, "a")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "a: cancelled"
        assert run.proc.poll() is None, "the run goes on"
        (tmp_path / "b.go").touch()
        assert run.wait(timeout=60) == 1  # not every instance completed
    finally:
        ended(run)
    results = run.results()
    a, b = by_name(results)["a"], by_name(results)["b"]
    assert a["status"] == "cancelled" and "stopped by `coordinator stop` from" in a["reason"]
    assert a["paused_s"] > 0  # until its stop
    assert b["status"] == "completed" and b["total_tokens"] == 120
    assert not results["interrupted"]
    no_orphans(results)


def test_stop_the_whole_run(tmp_path: Path, pg_dsn: str) -> None:
    orch = "ctl-stop-all"
    run = start_run(
        tmp_path,
        {
            "a": [{"marker": str(tmp_path / "a.started")}, {"sleep": 600}],
            "b": [{"marker": str(tmp_path / "b.started")}, {"sleep": 600}],
        },
        args=["--database-url", pg_dsn, "--orchestration-id", orch],
    )
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        wait_for((tmp_path / "b.started").exists, 30, "b to start")
        done = control(run, pg_dsn, "stop")  # no id: the newest running orchestration
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["a: cancelled", "b: cancelled"]
        assert run.wait(timeout=30) == 130  # as after a signal
    finally:
        ended(run)
    results = run.results()
    assert results["interrupted"]
    assert {i["status"] for i in results["instances"]} == {"cancelled"}
    assert shown(run, pg_dsn, orch)["orchestration"]["status"] == "interrupted"
    again = control(run, pg_dsn, "stop", orch)
    assert again.returncode == 2
    not_running = f"orchestration {orch} is not running (interrupted); nothing was sent"
    assert again.stderr.strip().endswith(not_running)
    attach = control(run, pg_dsn, "attach", orch)
    assert attach.returncode == 2
    assert attach.stderr.strip().endswith(
        f"orchestration {orch} is not running (interrupted); `coordinator status` shows it"
    )
    no_orphans(results)


def test_a_command_to_a_run_whose_coordinator_is_gone_says_so(tmp_path: Path, pg_dsn: str) -> None:
    orch = "ctl-lost"
    run = start_run(
        tmp_path,
        {"a": [{"marker": str(tmp_path / "a.started")}, {"sleep": 600}]},
        args=["--database-url", pg_dsn, "--orchestration-id", orch],
        env={"COORDINATOR_LEASE_S": "1.5"},
    )
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        pid = int(shown(run, pg_dsn, orch)["instances"][0]["pid"] or 0) or None
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=10)
        wait_for(lambda: shown(run, pg_dsn, orch)["orchestration"]["status"] == "lost", 10, "lost")
        done = control(run, pg_dsn, "pause", orch, "a")
        assert done.returncode == 2
        line = done.stderr.strip()
        lost = f"orchestration {orch}: no live coordinator owns it (lost: coordinator last seen"
        assert lost in line
        assert len(done.stderr.strip().splitlines()) == 1
        newest = control(run, pg_dsn, "stop")  # the newest one is that lost run
        assert newest.returncode == 2 and "no live coordinator owns it" in newest.stderr
    finally:
        ended(run)
    if pid is not None:  # the guardian reaped the instance of the killed coordinator
        wait_for(lambda: process_ended(pid), 10, "a to be reaped")


def test_no_acknowledgement_within_the_wait_withdraws_the_command(
    tmp_path: Path, pg_dsn: str
) -> None:
    orch = "ctl-noack"
    run = start_run(
        tmp_path,
        {"a": waiting_instance(tmp_path, "a"), "b": waiting_instance(tmp_path, "b")},
        args=["--database-url", pg_dsn, "--orchestration-id", orch],
    )
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        wait_for((tmp_path / "b.started").exists, 30, "b to start")
        run.proc.send_signal(signal.SIGSTOP)  # alive (its lease holds), but not answering
        try:
            done = control(run, pg_dsn, "pause", orch, "a", "--wait", "1.5")
            # Ctrl-C while waiting: withdrawn too.
            waiting = subprocess.Popen(
                [*COORDINATOR, "pause", orch, "a", "--database-url", pg_dsn],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=coordinator_env(run.state_dir),
            )
            wait_for(lambda: len(commands(pg_dsn)) == 2, 30, "the second command's row")
            waiting.send_signal(signal.SIGINT)
            _, err = waiting.communicate(timeout=15)
        finally:
            run.proc.send_signal(signal.SIGCONT)
        assert done.returncode == 1, done.stderr
        assert "did not acknowledge the pause within 1.5s; the command was withdrawn" in done.stderr
        assert waiting.returncode == 130 and b"interrupted" in err
        rows = commands(pg_dsn)
        assert [(r["taken_at"], r["acked_at"]) for r in rows] == [(None, None)] * 2
        assert all(r["withdrawn_at"] is not None for r in rows)
        # Commands are taken in order: once a later one is acknowledged, the withdrawn one
        # would have been applied before it, had it been.
        later = control(run, pg_dsn, "pause", orch, "b")
        assert later.returncode == 0 and later.stdout.strip() == "b: paused"
        assert instance_status(run, pg_dsn, orch, "a") == "running"
        assert control(run, pg_dsn, "unpause", orch).stdout.splitlines() == [
            "a: not paused (running)",
            "b: unpaused (running)",
        ]
        (tmp_path / "a.go").touch()
        (tmp_path / "b.go").touch()
        assert run.wait(timeout=60) == 0, run.stderr
    finally:
        ended(run)
    no_orphans(run.results())


def test_attach_shows_the_table_and_leaves_on_sigint_with_the_run_untouched(
    tmp_path: Path, pg_dsn: str
) -> None:
    orch = "ctl-attach"
    run = start_run(
        tmp_path,
        {"a": waiting_instance(tmp_path, "a")},
        args=["--database-url", pg_dsn, "--orchestration-id", orch],
    )
    out = tmp_path / "attach.out"
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        with out.open("wb") as sink:
            attach = subprocess.Popen(
                [*COORDINATOR, "attach", orch, "--database-url", pg_dsn],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=coordinator_env(run.state_dir),
            )
        try:
            wait_for(lambda: "attached to ctl-attach" in out.read_text(), 30, "attach to start")
            # the table comes at the first poll after the banner (later on a busy machine)
            table = f"coordinator {orch} [running]"
            try:
                wait_for(lambda: table in out.read_text(), 30, "the table")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {out.read_text()}") from None
            attach.send_signal(signal.SIGINT)
            assert attach.wait(timeout=15) == 0, out.read_text()
        finally:
            if attach.poll() is None:
                attach.kill()
                attach.wait()
        text = out.read_text()
        assert f"coordinator {orch} [running]" in text and " a " in text, text
        assert f"left {orch}; it goes on" in text
        assert run.proc.poll() is None
        assert instance_status(run, pg_dsn, orch, "a") == "running"
        (tmp_path / "a.go").touch()
        assert run.wait(timeout=60) == 0, run.stderr
    finally:
        ended(run)
    assert by_name(run.results())["a"]["status"] == "completed"
    no_orphans(run.results())


def commands(dsn: str) -> list[dict[str, Any]]:
    """Every control command row, oldest first."""

    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM control_commands ORDER BY id")]
        finally:
            await conn.close()

    return run_isolated(read())


def ended(run: CoordinatorRun) -> None:
    """Whatever happened in the test: no coordinator is left behind."""
    if run.proc.poll() is None:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()


def test_the_listener_rides_out_a_database_outage(
    tmp_path: Path, pg_dedicated_server: DedicatedServer
) -> None:
    """Postgres away mid-run: the run goes on, the listener says so once (log file) and
    takes commands again once it is back."""
    dsn, orch = pg_dedicated_server.dsn, "ctl-outage"
    run = start_run(
        tmp_path,
        {"a": waiting_instance(tmp_path, "a")},
        args=["--database-url", dsn, "--orchestration-id", orch],
    )
    log = run.state_dir / "logs" / "coordinator.jsonl"
    try:
        wait_for((tmp_path / "a.started").exists, 30, "a to start")
        pg_dedicated_server.stop()
        wait_for(lambda: "control channel unavailable" in log.read_text(), 20, "the log line")
        assert run.proc.poll() is None
        pg_dedicated_server.start()
        done = control(run, dsn, "pause", orch, "a", "--wait", "30")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "a: paused"
        assert control(run, dsn, "unpause", orch, "a").returncode == 0
        (tmp_path / "a.go").touch()
        assert run.wait(timeout=60) == 0, run.stderr
    finally:
        ended(run)
    unavailable = [x for x in log.read_text().splitlines() if "control channel unavailable" in x]
    assert len(unavailable) == 1, unavailable
    assert by_name(run.results())["a"]["status"] == "completed"
    no_orphans(run.results())
