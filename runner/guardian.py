"""A watchdog process that reaps every instance if the coordinator itself dies.

The coordinator starts ``python -m runner.guardian`` in its own session with a pipe on its
stdin and tells it which process groups and processes it launched. When the pipe closes
(clean exit, crash, SIGKILL, OOM), the guardian SIGTERMs what is left, waits a grace period,
SIGKILLs the rest and exits. Protocol, one line each: ``g PGID`` / ``-g PGID`` (a group),
``p PID CREATE_TIME`` (a descendant seen outside the group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil

GRACE_S = 2.0


def _alive(
    groups: set[int], procs: set[tuple[int, float]]
) -> tuple[set[int], list[psutil.Process]]:
    live_groups = set()
    for pgid in groups:
        try:
            os.killpg(pgid, 0)
            live_groups.add(pgid)
        except (ProcessLookupError, PermissionError):
            continue
    live_procs = []
    for pid, created in procs:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                live_procs.append(proc)
    return live_groups, live_procs


def reap(groups: set[int], procs: set[tuple[int, float]], grace: float = GRACE_S) -> int:
    """Stop everything tracked, and every descendant of a group leader still alive (found
    now, so a process that left its group moments ago is not missed); returns how many
    groups/processes were still alive."""
    from runner.process import descendants_by_leader

    procs = set(procs)
    for idents in descendants_by_leader(groups).values():
        procs |= {(i.pid, i.create_time) for i in idents}
    live_groups, live_procs = _alive(groups, procs)
    count = len(live_groups) + len(live_procs)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pgid in live_groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for proc in live_procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        live_groups, live_procs = _alive(
            live_groups, {(p.pid, p.create_time()) for p in live_procs if p.is_running()}
        )
        if not live_groups and not live_procs:
            return count
        time.sleep(0.05)  # polling foreign processes: there is nothing to wait on
    for pgid in live_groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for proc in live_procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return count


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    procs: set[tuple[int, float]] = set()
    for raw in sys.stdin.buffer:
        parts = raw.split()
        with contextlib.suppress(ValueError, IndexError):
            if parts[0] == b"g":
                groups.add(int(parts[1]))
            elif parts[0] == b"-g":
                groups.discard(int(parts[1]))
            elif parts[0] == b"p":
                procs.add((int(parts[1]), float(parts[2])))
    reap(groups, procs)
    return 0


class Guardian:
    """Coordinator side: start the guardian and keep it informed."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "runner.guardian"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._sent: set[tuple[int, float]] = set()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(OSError):
            stdin.write(line.encode() + b"\n")
            stdin.flush()

    def track_group(self, pgid: int) -> None:
        self._send(f"g {pgid}")

    def forget_group(self, pgid: int) -> None:
        self._send(f"-g {pgid}")

    def track_process(self, pid: int, create_time: float) -> None:
        key = (pid, create_time)
        if key not in self._sent:
            self._sent.add(key)
            self._send(f"p {pid} {create_time!r}")

    def close(self, timeout: float = 10.0) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)


if __name__ == "__main__":
    raise SystemExit(main())
