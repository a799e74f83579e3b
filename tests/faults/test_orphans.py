"""No orphans, also after a normal end: a process that an instance started and that left its
group and session (``setsid daemon &``, a double fork) is stopped when THAT instance ends,
while the run goes on; a guardian killed mid-run is restarted and still reaps everything
when the coordinator is then SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner.guardian import Guardian
from tests.engine.helpers import alive_cmdlines, sleeper
from tests.faults.harness import process_ended
from tests.faults.procs import coordinator, wait_for
from tests.unit.streams import init, result, usage


def _finishing_stream() -> list[str]:
    return [init().decode().rstrip("\n"), result(usage(10, 5)).decode().rstrip("\n")]


def _spawned(pidfile: Path) -> psutil.Process:
    """The process the replay started, by (pid, create time): psutil checks both."""
    pid, created = pidfile.read_text().split()
    proc = psutil.Process(int(pid))
    assert proc.create_time() == float(created), "the daemon was gone before we looked"
    return proc


@pytest.mark.parametrize("how", ["setsid", "double_fork"])
def test_daemon_started_just_before_a_normal_exit_dies_with_its_instance(
    tmp_path: Path, how: str
) -> None:
    tag = uuid.uuid4().hex
    pidfile = tmp_path / "daemon.pid"
    spawn: dict[str, Any] = {"spawn": sleeper(tag), "pidfile": str(pidfile)}
    spawn |= {"new_session": True} if how == "setsid" else {"double_fork": True}
    scripts: dict[str, list[dict[str, Any]]] = {
        "quick": [{"lines": _finishing_stream()[:1]}, spawn, {"lines": _finishing_stream()[1:]}],
        "long": [{"marker": str(tmp_path / "long.started")}, {"sleep": 600}],
    }
    with coordinator(tmp_path, scripts) as run:
        wait_for((tmp_path / "long.started").exists, 30, "the long instance to start")
        wait_for(pidfile.exists, 30, "the quick instance to start its daemon")
        wait_for(lambda: alive_cmdlines(tag) == [], 10, "the daemon to be stopped")
        assert run.proc.poll() is None, "the run must still be going on"

        def finished_lines() -> list[str]:
            log = (tmp_path / "coordinator.log").read_text().splitlines()
            return [x for x in log if "instance finished" in x and '"instance": "quick"' in x]

        # The daemon is stopped while its instance ends; the log line comes just after.
        wait_for(lambda: bool(finished_lines()), 10, "quick's end in the log")
        finished = finished_lines()
        assert len(finished) == 1 and '"status": "completed"' in finished[0]
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=15) == 130
    by = {i["name"]: i for i in run.results()["instances"]}
    assert by["quick"]["status"] == "completed"
    assert by["long"]["status"] == "cancelled"


def _guardian_of(coordinator_pid: int) -> psutil.Process | None:
    for child in psutil.Process(coordinator_pid).children():
        try:
            if "runner.guardian" in " ".join(child.cmdline()) and child.status() != "zombie":
                return child
        except psutil.Error:
            continue
    return None


def test_killed_guardian_is_restarted_and_still_reaps_everything(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    scripts: dict[str, list[dict[str, Any]]] = {
        name: [
            {"spawn": sleeper(tag), "new_session": True},
            {"spawn": sleeper(tag), "double_fork": True},
            {"marker": str(tmp_path / f"{name}.started")},
            {"sleep": 600},
        ]
        for name in ("a", "b")
    }
    with coordinator(tmp_path, scripts) as run:
        wait_for(
            lambda: all((tmp_path / f"{n}.started").exists() for n in ("a", "b")),
            30,
            "the instances to start",
        )
        wait_for(lambda: len(alive_cmdlines(tag)) == 4, 10, "every daemon to run")
        first = _guardian_of(run.proc.pid)
        assert first is not None
        leaders = [
            child
            for child in psutil.Process(run.proc.pid).children()
            if "runner.replay" in " ".join(child.cmdline())
        ]
        assert len(leaders) == 2
        first.kill()
        wait_for(
            lambda: (g := _guardian_of(run.proc.pid)) is not None and g.pid != first.pid,
            10,
            "a new guardian",
        )
        log = tmp_path / "coordinator.log"
        wait_for(lambda: "restarted as pid" in log.read_text(), 5, "the note")
        run.proc.kill()  # no handler runs: only the new guardian can reap
        run.proc.wait(timeout=10)
        wait_for(lambda: alive_cmdlines(tag) == [], 10, "the new guardian to reap the daemons")
        wait_for(
            lambda: not any(p.is_running() and p.status() != "zombie" for p in leaders),
            10,
            "the instances to be reaped",
        )


def test_a_guardian_that_cannot_be_restarted_says_the_run_is_unguarded() -> None:
    guardian = Guardian()
    try:
        assert guardian.check() is None  # alive: nothing to say
        pid = guardian.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        guardian.command = (str(Path(sys.executable).parent / "no-such-python"),)
        wait_for(lambda: process_ended(pid), 5, "the guardian to die")
        note = guardian.check()
        assert note is not None and note.startswith("UNGUARDED RUN: the guardian")
        assert "cannot be restarted" in note and guardian.unguarded is not None
        assert guardian.pid is None
        guardian.track_group(1234, "mark")  # and tracking goes on without failing
    finally:
        guardian.close()


def test_a_guardian_told_to_reap_now_stops_everything_and_goes_on_guarding() -> None:
    """``r GRACE``: a runner whose lease lapsed while its loop was too busy to stop its
    copies; the guardian reaps at once (grace then SIGKILL), forgets them, keeps running."""

    def sleeper_group(ignore_term: bool) -> subprocess.Popen[bytes]:
        code = "import signal, time\n"
        if ignore_term:
            code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        code += "print('ready', flush=True)\ntime.sleep(600)\n"
        proc = subprocess.Popen(
            [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    guardian = Guardian()
    try:
        polite, stubborn = sleeper_group(False), sleeper_group(True)
        for proc in (polite, stubborn):
            guardian.track_group(proc.pid)
        guardian.reap_now(0.5)
        assert polite.wait(timeout=10) == -signal.SIGTERM
        assert stubborn.wait(timeout=10) == -signal.SIGKILL  # past the grace
        assert guardian._proc is not None and guardian._proc.poll() is None, "it goes on"
        later = sleeper_group(False)
        guardian.track_group(later.pid)
    finally:
        guardian.close()
    assert later.wait(timeout=10) == -signal.SIGTERM  # still guarded after the reap
