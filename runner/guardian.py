"""A watchdog process that reaps every instance if the coordinator itself dies.

The coordinator starts ``python -m runner.guardian`` in its own session with a pipe on its
stdin and tells it which process groups and processes it launched. When the pipe closes
(clean exit, crash, SIGKILL, OOM), the guardian SIGTERMs what is left, waits a grace period,
SIGKILLs the rest and exits. Protocol, one line each: ``g PGID [MARK]`` / ``-g PGID`` (a
group, and the mark its processes carry in their environment: what left the group is found
by it), ``p PID CREATE_TIME`` (a descendant seen outside the group), ``w SECONDS [GRACE]`` (a
watchdog: when nothing, not even a ``k`` keep-alive, comes for that long, the coordinator is
frozen and cannot stop its instances: they are reaped then, GRACE seconds from SIGTERM to
SIGKILL, and the guardian goes on), ``r GRACE`` (reap everything now: a runner whose lease
lapsed while its event loop was too busy to stop its copies in time).

If the guardian itself dies mid-run (an OOM kill, a stray ``kill -9``), the coordinator
starts a new one and tells it everything again (:meth:`Guardian.check`), or, if it cannot,
says loudly that the run is unguarded.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

import psutil

from runner.groups import group_alive

GRACE_S = 2.0


def _alive(
    groups: set[int], procs: set[tuple[int, float]]
) -> tuple[set[int], list[psutil.Process]]:
    live_groups = set()
    for pgid in groups:
        if group_alive(pgid):
            live_groups.add(pgid)
    live_procs = []
    for pid, created in procs:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                live_procs.append(proc)
    return live_groups, live_procs


def reap(
    groups: set[int],
    procs: set[tuple[int, float]],
    grace: float = GRACE_S,
    marks: set[str] | None = None,
) -> int:
    """Stop everything tracked, every descendant of a group leader still alive and every
    process carrying a mark (found now, so a process that left its group moments ago is not
    missed); returns how many groups/processes were still alive."""
    from runner.process import descendants_by_leader, marked_processes

    procs = set(procs)
    for idents in descendants_by_leader(groups).values():
        procs |= {(i.pid, i.create_time) for i in idents}
    for proc in marked_processes(marks or set()):
        with contextlib.suppress(psutil.Error):
            procs.add((proc.pid, proc.create_time()))
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
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the end of the pipe ends the guardian
    groups: dict[int, str | None] = {}
    procs: set[tuple[int, float]] = set()
    watchdog: float | None = None  # ``w S [G]``: silence for S seconds reaps everything
    watchdog_grace = GRACE_S  # ... with G seconds from SIGTERM to SIGKILL
    heard = time.monotonic()
    fd = sys.stdin.fileno()
    pending = b""
    while True:
        wait = None if watchdog is None else max(0.0, heard + watchdog - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:  # the coordinator is frozen (stopped, hung): it cannot stop its
            # instances, and after its lease another host may run them: stop them now
            reap(set(groups), procs, watchdog_grace, marks={m for m in groups.values() if m})
            groups.clear()
            procs.clear()
            heard = time.monotonic()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        heard = time.monotonic()
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            parts = raw.split()
            with contextlib.suppress(ValueError, IndexError):
                if parts[0] == b"g":
                    groups[int(parts[1])] = parts[2].decode() if len(parts) > 2 else None
                elif parts[0] == b"-g":
                    groups.pop(int(parts[1]), None)
                elif parts[0] == b"p":
                    procs.add((int(parts[1]), float(parts[2])))
                elif parts[0] == b"w":
                    watchdog = float(parts[1]) if float(parts[1]) > 0 else None
                    watchdog_grace = float(parts[2]) if len(parts) > 2 else GRACE_S
                elif parts[0] == b"r":
                    reap(set(groups), procs, float(parts[1]), {m for m in groups.values() if m})
                    groups.clear()
                    procs.clear()
                # b"k": a keep-alive, only heard
    reap(set(groups), procs, marks={m for m in groups.values() if m})
    return 0


GUARDIAN_COMMAND = (sys.executable, "-m", "runner.guardian")


class Guardian:
    """Coordinator side: start the guardian, keep it informed, restart it if it dies."""

    def __init__(self, command: tuple[str, ...] = GUARDIAN_COMMAND) -> None:
        self.command = command
        self._groups: dict[int, str | None] = {}
        self._sent: set[tuple[int, float]] = set()
        self.unguarded: str | None = None  # why no guardian runs (None: one does)
        self._watchdog: float | None = None
        self._watchdog_grace = GRACE_S
        self._proc: subprocess.Popen[bytes] | None = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(self.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def check(self) -> str | None:
        """If the guardian died, start a new one and hand it everything tracked so far.
        Returns a note to show (None: nothing happened)."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return None
        self._proc = None
        dead = f"the guardian (pid {proc.pid}) died (exit code {proc.returncode})"
        try:
            self._proc = self._start()
        except OSError as exc:
            self.unguarded = f"{dead} and cannot be restarted: {exc}"
            return (
                f"UNGUARDED RUN: {self.unguarded}; if this coordinator is killed, "
                "its instances keep running"
            )
        if self._watchdog is not None:
            self._send(f"w {self._watchdog!r} {self._watchdog_grace!r}")
        for pgid, mark in self._groups.items():
            self._send(f"g {pgid}" + (f" {mark}" if mark else ""))
        for pid, created in self._sent:
            self._send(f"p {pid} {created!r}")
        return f"{dead}: restarted as pid {self._proc.pid}, tracking everything again"

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(OSError):  # a dead guardian: check() restarts it
            stdin.write(line.encode() + b"\n")
            stdin.flush()

    def watchdog(self, seconds: float, grace: float = GRACE_S) -> None:
        """Reap everything if this process sends nothing (not even :meth:`keepalive`) for
        ``seconds``: it is frozen and cannot stop its instances itself. ``grace``: SIGTERM
        to SIGKILL of that reap (a lease's end may be near)."""
        self._watchdog = seconds
        self._watchdog_grace = grace
        self._send(f"w {seconds!r} {grace!r}")

    def reap_now(self, grace: float = GRACE_S) -> None:
        """Reap everything tracked now (from any thread), ``grace`` from SIGTERM to SIGKILL;
        the guardian forgets it all and goes on."""
        self._send(f"r {grace!r}")

    def keepalive(self) -> None:
        self._send("k")

    def track_group(self, pgid: int, mark: str | None = None) -> None:
        self._groups[pgid] = mark
        self._send(f"g {pgid}" + (f" {mark}" if mark else ""))

    def forget_group(self, pgid: int) -> None:
        """The instance ended and was reaped: its pgid may be reused by anyone now."""
        if self._groups.pop(pgid, False) is not False:
            self._send(f"-g {pgid}")

    def track_process(self, pid: int, create_time: float) -> None:
        key = (pid, create_time)
        if key not in self._sent:
            self._sent.add(key)
            self._send(f"p {pid} {create_time!r}")

    def close(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)


if __name__ == "__main__":
    raise SystemExit(main())
