"""SIGHUP (the terminal closed, the ssh session dropped) ends a run like SIGTERM: every
process group stopped, results written, the orchestration row closed as ``interrupted``,
also when the terminal it reports to is gone (writes fail with EIO or EPIPE)."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from coordinator.db import open_store
from coordinator.db.embedded import run_isolated
from tests.engine.helpers import alive_cmdlines, sleeper
from tests.faults.procs import Run, coordinator, wait_for

STOP_WITHIN_S = 10.0


def _working(tmp_path: Path, tag: str, names: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    """Each instance starts a tool's grandchild in its group and one in a new session."""
    return {
        name: [
            {"spawn": sleeper(tag)},
            {"spawn": sleeper(tag), "new_session": True},
            {"marker": str(tmp_path / f"{name}.started")},
            {"sleep": 600},
        ]
        for name in names
    }


def _started(run: Run, tmp_path: Path, tag: str, names: tuple[str, ...] = ("a", "b")) -> None:
    wait_for(
        lambda: all((tmp_path / f"{n}.started").exists() for n in names),
        30,
        "every instance to start",
    )
    wait_for(lambda: len(alive_cmdlines(tag)) == 2 * len(names), 10, "every grandchild to run")


def _ended_like_sigterm(run: Run, tag: str) -> dict[str, Any]:
    code = run.proc.wait(timeout=STOP_WITHIN_S)
    assert code == 130, run.text()
    results = run.results()
    assert results["interrupted"] is True
    assert {i["status"] for i in results["instances"]} == {"cancelled"}
    assert any("SIGHUP" in note for note in results["notes"]), results["notes"]
    wait_for(lambda: alive_cmdlines(tag) == [], 5, "every grandchild to be stopped")
    return results


def test_closed_terminal_stops_everything_and_writes_results(tmp_path: Path) -> None:
    """A real hang-up: the coordinator's controlling terminal (a pty) goes away while the
    live table is drawn on it; the kernel sends SIGHUP and every later write gets EIO."""
    tag = uuid.uuid4().hex
    with coordinator(tmp_path, _working(tmp_path, tag), tty=True) as run:
        _started(run, tmp_path, tag)
        wait_for(lambda: b"coordinator" in run.seen, 10, "the live report on the terminal")
        run.hang_up()
        _ended_like_sigterm(run, tag)


def test_sighup_with_the_output_pipe_gone(tmp_path: Path) -> None:
    """``coordinator run ... | tee log`` and the ssh session drops: the reader of the pipe
    dies first (writes get EPIPE), then SIGHUP comes, then a second one (the shell passes
    its own on to its jobs)."""
    tag = uuid.uuid4().hex
    with coordinator(tmp_path, _working(tmp_path, tag)) as run:
        _started(run, tmp_path, tag)
        run.close_pipe()
        run.proc.send_signal(signal.SIGHUP)
        run.proc.send_signal(signal.SIGHUP)
        _ended_like_sigterm(run, tag)


def test_second_signal_while_stopping_changes_nothing(tmp_path: Path) -> None:
    """SIGHUP, then SIGTERM while the instances are being stopped (they ignore SIGTERM, so
    stopping takes the whole grace period): one orderly stop, results written."""
    tag = uuid.uuid4().hex
    stubborn: list[dict[str, Any]] = [
        {"spawn": sleeper(tag)},
        {"marker": str(tmp_path / "a.started")},
        {"lines": ["ignoring SIGTERM"]},
        {"sleep": 600},
    ]
    with coordinator(tmp_path, {"a": stubborn}, env={"REPLAY_IGNORE_SIGTERM": "1"}) as run:
        wait_for((tmp_path / "a.started").exists, 30, "the instance to start")
        wait_for(lambda: len(alive_cmdlines(tag)) == 1, 10, "the grandchild to run")
        run.proc.send_signal(signal.SIGHUP)
        log = tmp_path / "coordinator.log"
        wait_for(lambda: "stopping every instance" in log.read_text(), 10, "the stop to begin")
        run.proc.send_signal(signal.SIGTERM)  # while the instance ignores its SIGTERM
        results = _ended_like_sigterm(run, tag)
    assert results["instances"][0]["reason"] == "interrupted by SIGHUP"


def _statuses(tag: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if tag in " ".join(proc.info["cmdline"] or []):
            found.append(proc.info["status"])
    return found


def test_sighup_while_paused_at_a_barrier(tmp_path: Path) -> None:
    """``fast``'s whole group is SIGSTOPped at the 30% barrier: SIGHUP still stops it."""
    tag = uuid.uuid4().hex
    progress = {
        "type": "assistant",
        "message": {
            "id": "m1",
            "role": "assistant",
            "content": [{"type": "text", "text": "PROGRESS: 30%"}],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }
    scripts: dict[str, list[dict[str, Any]]] = {
        "fast": [{"spawn": sleeper(f"{tag}-fast")}, {"lines": [progress]}, {"sleep": 600}],
        "slow": [{"spawn": sleeper(f"{tag}-slow")}, {"sleep": 600}],
    }
    sync = {"sync": {"mode": "milestone", "timeout_s": 600}}
    with coordinator(tmp_path, scripts, sync) as run:
        wait_for(lambda: _statuses(f"{tag}-fast") == ["stopped"], 30, "fast's group to pause")
        run.proc.send_signal(signal.SIGHUP)
        _ended_like_sigterm(run, tag)


def test_sighup_during_the_start_at_wait_launches_nothing(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    with coordinator(tmp_path, _working(tmp_path, tag, ("a",)), args=["--start-at", "2h"]) as run:
        wait_for(lambda: b"Waiting until" in _read_some(run), 30, "the countdown")
        run.proc.send_signal(signal.SIGHUP)
        code = run.proc.wait(timeout=STOP_WITHIN_S)
    assert code == 130
    assert not (tmp_path / "a.started").exists()
    assert alive_cmdlines(tag) == []


def _read_some(run: Run) -> bytes:
    """What the coordinator printed so far (the pipe is non-blocking once read from)."""
    import os

    assert run.proc.stdout is not None
    fd = run.proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        chunk = b""
    run.seen += chunk
    return bytes(run.seen)


@pytest.mark.postgres
def test_sighup_closes_the_orchestration_row_as_interrupted(tmp_path: Path, pg_dsn: str) -> None:
    tag = uuid.uuid4().hex
    orch_id = f"hup-{tag[:8]}"
    with coordinator(
        tmp_path,
        _working(tmp_path, tag),
        args=["--orchestration-id", orch_id],
        database_url=pg_dsn,
    ) as run:
        _started(run, tmp_path, tag)
        run.close_pipe()
        run.proc.send_signal(signal.SIGHUP)
        _ended_like_sigterm(run, tag)

    async def row_status() -> tuple[str, list[str]]:
        store = await open_store(pg_dsn)
        try:
            row = await store.get_orchestration(orch_id)
            assert row is not None
            return row.status, [i.status for i in await store.list_instances(orch_id)]
        finally:
            await store.close()

    status, instances = run_isolated(row_status())
    assert status == "interrupted"
    assert instances == ["cancelled", "cancelled"]


def test_a_dead_pipe_is_pointed_at_dev_null_once() -> None:
    """The stream under the report: the first failed write silences the descriptor for
    good (so also the interpreter's final flush of what is still buffered cannot fail)."""
    import io
    import os

    from coordinator.status.terminal import TerminalStream

    read_end, write_end = os.pipe()
    raw = io.TextIOWrapper(io.FileIO(write_end, "w"), encoding="utf-8")
    stream = TerminalStream(raw)
    stream.write("before\n")
    stream.flush()
    assert os.read(read_end, 100) == b"before\n"
    os.close(read_end)
    stream.write("after the reader went away\n")
    stream.flush()  # EPIPE: no exception
    assert stream.lost is not None and not stream.isatty()
    assert os.path.samefile(f"/proc/self/fd/{raw.fileno()}", os.devnull)
    stream.write("dropped\n")
    raw.close()  # flushing what was buffered works now
