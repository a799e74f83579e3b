"""``coordinator run --detach``: refused in the foreground when a run would be refused (one
line, exit 2, no daemon, no pidfile); otherwise the run goes on in a session of its own and
outlives the terminal it was started from, with its pidfile locked in the state directory.
Real processes over the replay stand-in, a real pty, real signals, real Postgres."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from coordinator.control.pidfile import parse
from tests.engine.helpers import REPLAY, alive_cmdlines, sleeper
from tests.faults.harness import (
    COORDINATOR,
    answer,
    coordinator,
    coordinator_env,
    process_ended,
    wait_for,
    write_config,
)
from tests.pg import DedicatedServer

DAEMON_FLAG = "--detached-ready-fd"


def _argv(tmp_path: Path, config: Path, *args: str) -> list[str]:
    return [
        *COORDINATOR,
        "run",
        "--config",
        str(config),
        "--claude-bin",
        REPLAY,
        "--output",
        str(tmp_path / "results.json"),
        "--workspace",
        str(tmp_path),
        "--status-report-interval",
        "0.2",
        "--detach",
        *args,
    ]


def _held(tmp_path: Path, tag: str, name: str = "a") -> list[dict[str, Any]]:
    """An instance that starts a tool's grandchild, says it started, waits for the test's
    go-ahead, then answers (10 in, 5 out) and ends."""
    return [
        {"spawn": sleeper(tag)},
        {"marker": str(tmp_path / f"{name}.started")},
        {"wait_file": str(tmp_path / f"{name}.go"), "timeout": 120},
        {"lines": answer(f"msg-{name}", 10, 5)},
    ]


def _daemons(tmp_path: Path) -> list[psutil.Process]:
    """Detached coordinators of this test (their argv names its results file)."""
    found = []
    mine = str(tmp_path / "results.json")
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = proc.info["cmdline"] or []
            if DAEMON_FLAG in cmd and mine in cmd and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


@pytest.fixture
def reap_daemons(tmp_path: Path) -> Iterator[None]:
    """Whatever a failed test left running is killed (its guardian then reaps the rest)."""
    yield
    for proc in _daemons(tmp_path):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _pidinfo(state: Path, oid: str) -> Any:
    return parse((state / "runs" / f"{oid}.pid").read_text(), "pidfile")


def _pid_of(state: Path, oid: str) -> int:
    path = state / "runs" / f"{oid}.pid"
    wait_for(lambda: path.is_file() and path.read_text().strip() != "", 10, "the pidfile")
    return int(_pidinfo(state, oid).pid)


def _results(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    return data


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("coordinator: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---- a terminal session that goes away ----------------------------------------------


class Terminal:
    """A pty whose session leader is a shell stand-in: it runs one command in the
    terminal's foreground process group, prints its exit code, and stays (as a shell
    does) until the terminal is closed."""

    LEADER = (
        "import subprocess, sys, time\n"
        "code = subprocess.call(sys.argv[1:])\n"
        "print('command exited', code, flush=True)\n"
        "time.sleep(600)\n"
    )

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.seen = bytearray()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.LEADER, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=_controlling_terminal,
            env=env,
        )
        os.close(slave)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.seen += chunk
        finally:
            os.close(self.master)

    def text(self) -> str:
        return self.seen.decode(errors="replace")

    def close(self) -> None:
        """The terminal window closes: the kernel hangs up the session (SIGHUP)."""
        self._stop.set()
        self._reader.join()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._reader.is_alive():
            self.close()


def _controlling_terminal() -> None:
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_detached_run_outlives_its_terminal(tmp_path: Path, reap_daemons: None) -> None:
    tag = uuid.uuid4().hex
    state = tmp_path / "state"
    config = write_config(tmp_path, {"a": _held(tmp_path, tag)})
    term = Terminal(
        _argv(tmp_path, config, "--no-db", "--orchestration-id", "night"),
        coordinator_env(state),
    )
    try:
        wait_for(lambda: "command exited" in term.text(), 30, "the foreground to return")
        assert "command exited 0" in term.text(), term.text()
        assert "kill -TERM" in term.text() and "night" in term.text(), term.text()
        pid = _pid_of(state, "night")
        assert _pidinfo(state, "night").orchestration_id == "night"
        wait_for((tmp_path / "a.started").exists, 30, "the instance to start")
        daemon = psutil.Process(pid)
        assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(term.proc.pid)
        assert daemon.terminal() is None

        term.close()  # SIGHUP to the session and its foreground group
        term.proc.wait(timeout=10)
        assert term.proc.returncode == -signal.SIGHUP
        assert daemon.is_running() and daemon.status() != psutil.STATUS_ZOMBIE

        (tmp_path / "a.go").touch()
        wait_for(lambda: process_ended(pid), 30, "the detached run to end")
    finally:
        term.kill()
    results = _results(tmp_path)
    assert results["exit_code"] == 0 and results["interrupted"] is False
    (inst,) = results["instances"]
    assert inst["status"] == "completed"
    assert (inst["input_tokens"], inst["output_tokens"], inst["total_tokens"]) == (10, 5, 15)
    assert not (state / "runs" / "night.pid").exists()
    wait_for(lambda: alive_cmdlines(tag) == [], 5, "no orphans")
    console = (state / "runs" / "night.out").read_text()
    assert "night: completed 1" in console, console


# ---- refused in the foreground ------------------------------------------------------


def test_config_and_preflight_errors_are_refused_in_the_foreground(
    tmp_path: Path, reap_daemons: None
) -> None:
    state = tmp_path / "state"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instances": [{"command": "x", "colour": "red"}]}))
    done = subprocess.run(
        _argv(tmp_path, bad, "--no-db", "--orchestration-id", "bad"),
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(state),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert "colour" in _one_line_error(done.stderr)

    config = write_config(tmp_path, {"a": _held(tmp_path, "x")})
    missing = tmp_path / "no-such-dir"
    argv = _argv(tmp_path, config, "--no-db", "--orchestration-id", "bad")
    argv[argv.index("--workspace") + 1] = str(missing)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(state),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert str(missing) in _one_line_error(done.stderr)

    # the daemon's own check (the database) comes back to the foreground as its one line
    done = subprocess.run(
        _argv(
            tmp_path,
            config,
            "--orchestration-id",
            "bad",
            "--database-url",
            "postgresql://u:hunter2pw@127.0.0.1:1/x",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(state),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    line = _one_line_error(done.stderr)
    assert "database" in line and "unreachable" in line and "hunter2pw" not in line
    assert not (tmp_path / "a.started").exists()
    assert _daemons(tmp_path) == []
    runs = state / "runs"
    assert not runs.exists() or sorted(p.name for p in runs.iterdir()) == []


def test_dry_run_with_detach_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"a": _held(tmp_path, "x")})
    done = subprocess.run(
        [*_argv(tmp_path, config, "--no-db"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(tmp_path / "state"),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "--dry-run" in _one_line_error(done.stderr)


# ---- the pidfile: stop by it, one run per id, stale files ----------------------------


def test_sigterm_by_the_pidfile_stops_it_with_results(tmp_path: Path, reap_daemons: None) -> None:
    tag = uuid.uuid4().hex
    state = tmp_path / "state"
    config = write_config(
        tmp_path,
        {"a": [{"spawn": sleeper(tag)}, {"marker": str(tmp_path / "a.started")}, {"sleep": 600}]},
    )
    done = subprocess.run(
        _argv(tmp_path, config, "--no-db", "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(state),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)  # --json: how to reach it, as one JSON document
    oid, pid = shown["orchestration_id"], shown["pid"]
    assert shown["commands"]["stop"] == f"kill -TERM {pid}"
    assert shown["pidfile"] == str(state / "runs" / f"{oid}.pid")
    wait_for((tmp_path / "a.started").exists, 30, "the instance to start")
    info = _pidinfo(state, oid)
    assert (info.pid, info.orchestration_id, info.state) == (pid, oid, "running")
    assert info.host and info.started and info.results == str(tmp_path / "results.json")

    os.kill(_pid_of(state, oid), signal.SIGTERM)
    wait_for(lambda: process_ended(pid), 20, "the detached run to stop")
    results = _results(tmp_path)
    assert results["interrupted"] is True
    assert [i["status"] for i in results["instances"]] == ["cancelled"]
    assert not (state / "runs" / f"{oid}.pid").exists()
    wait_for(lambda: alive_cmdlines(tag) == [], 5, "no orphans")


def test_one_detached_run_per_id_and_a_stale_pidfile_is_no_obstacle(
    tmp_path: Path, reap_daemons: None
) -> None:
    state = tmp_path / "state"
    (state / "runs").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = state / "runs" / "once.pid"
    stale.write_text(f"{dead.pid}\norchestration: once\nhost: gone\nstate: running\n")
    config = write_config(tmp_path, {"a": _held(tmp_path, uuid.uuid4().hex)})
    argv = _argv(tmp_path, config, "--no-db", "--orchestration-id", "once")

    def detach() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env=coordinator_env(state),
            stdin=subprocess.DEVNULL,
        )

    first = detach()
    assert first.returncode == 0, first.stderr
    pid = _pid_of(state, "once")
    assert pid != dead.pid
    wait_for((tmp_path / "a.started").exists, 30, "the instance to start")

    second = detach()
    assert second.returncode == 2, second.stderr
    line = _one_line_error(second.stderr)
    assert "already running detached" in line and f"pid {pid}" in line, line
    assert [p.pid for p in _daemons(tmp_path)] == [pid]
    assert _pidinfo(state, "once").pid == pid

    (tmp_path / "a.go").touch()
    wait_for(lambda: process_ended(pid), 30, "the detached run to end")
    assert _results(tmp_path)["exit_code"] == 0
    assert not stale.exists()


# ---- --start-at ---------------------------------------------------------------------


def test_start_at_returns_at_once_and_starts_at_the_time(
    tmp_path: Path, reap_daemons: None
) -> None:
    state = tmp_path / "state"
    config = write_config(
        tmp_path,
        {"a": [{"marker": str(tmp_path / "a.started")}, {"lines": answer("m", 3, 4)}]},
    )
    start = (datetime.now().astimezone() + timedelta(seconds=6)).replace(microsecond=0)
    done = subprocess.run(
        _argv(
            tmp_path,
            config,
            "--no-db",
            "--orchestration-id",
            "later",
            "--start-at",
            start.isoformat(),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=coordinator_env(state),
        stdin=subprocess.DEVNULL,
    )
    returned = time.time()
    assert done.returncode == 0, done.stderr
    assert returned < start.timestamp(), "the foreground waited for the start time"
    assert f"waits until {start.isoformat()}" in done.stdout, done.stdout
    info = _pidinfo(state, "later")
    assert info.state == f"waiting until {start.isoformat()}"
    assert not (tmp_path / "a.started").exists()
    wait_for(lambda: "Waiting until" in (state / "runs" / "later.out").read_text(), 10, "a line")

    wait_for((tmp_path / "a.started").exists, 30, "the instance to start")
    started_ns = int((tmp_path / "a.started").read_text())
    assert started_ns / 1e9 >= start.timestamp()
    wait_for(lambda: process_ended(info.pid), 30, "the detached run to end")
    (inst,) = _results(tmp_path)["instances"]
    assert (inst["status"], inst["total_tokens"]) == ("completed", 7)
    log = (state / "logs" / "coordinator.jsonl").read_text()
    assert '"scheduled"' in log and '"start time reached"' in log


# ---- with Postgres ------------------------------------------------------------------


@pytest.mark.postgres
def test_detached_run_with_postgres(
    tmp_path: Path, pg_dedicated_server: DedicatedServer, reap_daemons: None
) -> None:
    state = tmp_path / "state"
    dsn = pg_dedicated_server.dsn
    tag = uuid.uuid4().hex
    config = write_config(tmp_path, {"a": _held(tmp_path, tag)})
    argv = _argv(tmp_path, config, "--database-url", dsn, "--orchestration-id", "pgnight")
    env = coordinator_env(state)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    for command in ("coordinator attach pgnight", "coordinator status pgnight"):
        assert command in done.stdout, done.stdout
    pid = _pid_of(state, "pgnight")
    assert dsn not in " ".join(psutil.Process(pid).cmdline())  # it went on the daemon's stdin
    wait_for((tmp_path / "a.started").exists, 30, "the instance to start")

    def status() -> dict[str, Any]:
        shown = coordinator(["status", "pgnight", "--json", "--database-url", dsn], state)
        assert shown.returncode == 0, shown.stderr
        data: dict[str, Any] = json.loads(shown.stdout)
        return data

    assert status()["orchestration"]["status"] == "running"
    (tmp_path / "a.go").touch()
    wait_for(lambda: process_ended(pid), 30, "the detached run to end")
    final = status()
    assert final["orchestration"]["status"] == "completed"
    assert [i["total_tokens"] for i in final["instances"]] == [15]
    assert _results(tmp_path)["instances"][0]["total_tokens"] == 15
    wait_for(lambda: alive_cmdlines(tag) == [], 5, "no orphans")

    again = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL
    )
    assert again.returncode == 2, again.stderr
    assert "already exists" in _one_line_error(again.stderr)
    assert _daemons(tmp_path) == []


def test_a_killed_daemon_leaves_no_orphans_and_its_id_free(
    tmp_path: Path, reap_daemons: None
) -> None:
    """SIGKILL of the detached coordinator: its guardian reaps the instances; the pidfile it
    could not remove is stale (lock free), so the same id can be detached again."""
    tag = uuid.uuid4().hex
    state = tmp_path / "state"
    config = write_config(tmp_path, {"a": _held(tmp_path, tag)})
    argv = _argv(tmp_path, config, "--no-db", "--orchestration-id", "doomed")
    env = coordinator_env(state)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    pid = _pid_of(state, "doomed")
    wait_for(lambda: len(alive_cmdlines(tag)) == 1, 30, "the tool's grandchild to run")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_ended(pid), 10, "the daemon to die")
    wait_for(lambda: alive_cmdlines(tag) == [], 15, "the guardian to reap the instance")
    assert (state / "runs" / "doomed.pid").exists()  # stale: nobody holds its lock

    (tmp_path / "a.started").unlink()
    again = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert again.returncode == 0, again.stderr
    # read while the run is held: with the go-ahead given first, a quick second run could
    # end and remove its pidfile before it is read (a flake on a loaded machine)
    wait_for((tmp_path / "a.started").exists, 30, "the second run's instance to start")
    second = _pid_of(state, "doomed")
    assert second != pid
    (tmp_path / "a.go").touch()
    wait_for(lambda: process_ended(second), 30, "the second run to end")
    assert _results(tmp_path)["instances"][0]["total_tokens"] == 15
    assert not (state / "runs" / "doomed.pid").exists()
    wait_for(lambda: alive_cmdlines(tag) == [], 5, "no orphans")


def test_a_daemon_that_dies_before_it_is_ready_is_reported(
    tmp_path: Path, reap_daemons: None
) -> None:
    """The daemon hangs in its database check (a server that accepts and never answers)
    and is killed there: the foreground says so, with where to look, and exits 1."""
    import socket

    state = tmp_path / "state"
    config = write_config(tmp_path, {"a": _held(tmp_path, uuid.uuid4().hex)})
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        url = f"postgresql://u@127.0.0.1:{mute.getsockname()[1]}/x"
        argv = _argv(tmp_path, config, "--orchestration-id", "early", "--database-url", url)
        front = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=coordinator_env(state),
        )
        try:
            wait_for(lambda: len(_daemons(tmp_path)) == 1, 30, "the daemon to start")
            (daemon,) = _daemons(tmp_path)
            daemon.kill()
            _, err = front.communicate(timeout=30)
        finally:
            if front.poll() is None:
                front.kill()
                front.wait()
    assert front.returncode == 1, err
    line = _one_line_error(err)
    assert "ended before it was ready (exit -9)" in line, line
    assert str(state / "runs" / "early.out") in line, line
    assert not (tmp_path / "a.started").exists()
