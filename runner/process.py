"""The only module that touches an instance's OS process.

Each instance runs in its own session and process group. Stopping is: close stdin,
SIGTERM the group and every descendant ever seen, wait a grace period, SIGKILL whatever is
left, reap. Descendants are tracked because a tool may start processes in a new session
(out of the group's reach); the coordinator also makes itself a child subreaper so such
orphans are re-parented to it, not to init, and can still be found.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 1 << 18


def become_subreaper() -> bool:
    """Orphaned descendants of our children are re-parented to us (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True, slots=True)
class ProcIdentity:
    pid: int
    create_time: float


@dataclass(slots=True)
class ProcessTree:
    """Every descendant of one leader ever seen, by (pid, create time) so that a recycled
    pid is never killed by mistake."""

    leader: int
    seen: set[ProcIdentity] = field(default_factory=set)

    def snapshot(self) -> set[ProcIdentity]:
        try:
            kids = psutil.Process(self.leader).children(recursive=True)
        except psutil.Error:
            kids = []
        for kid in kids:
            with contextlib.suppress(psutil.Error):
                self.seen.add(ProcIdentity(kid.pid, kid.create_time()))
        return self.seen

    def alive(self) -> list[psutil.Process]:
        out = []
        for ident in self.seen:
            try:
                proc = psutil.Process(ident.pid)
                if proc.create_time() == ident.create_time and proc.status() != "zombie":
                    out.append(proc)
            except psutil.Error:
                continue
        return out


def descendants_by_leader(leaders: set[int]) -> dict[int, set[ProcIdentity]]:
    """One pass over the process table: every descendant of each leader."""
    children: dict[int, list[tuple[int, float]]] = {}
    for proc in psutil.process_iter(["ppid", "create_time"]):
        info = proc.info
        if info["ppid"] is not None and info["create_time"] is not None:
            children.setdefault(info["ppid"], []).append((proc.pid, info["create_time"]))
    out: dict[int, set[ProcIdentity]] = {}
    for leader in leaders:
        found: set[ProcIdentity] = set()
        stack = [leader]
        while stack:
            for pid, created in children.get(stack.pop(), ()):
                ident = ProcIdentity(pid, created)
                if ident not in found:
                    found.add(ident)
                    stack.append(pid)
        out[leader] = found
    return out


class InstanceProcess:
    """A running claude (or stand-in) process: spawn, read, write turns, suspend, stop."""

    def __init__(self, proc: asyncio.subprocess.Process, tree: ProcessTree) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the leader's pid is the group id
        self.tree = tree
        self.suspended = False

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin_pipe: bool,
    ) -> InstanceProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=dict(env),
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=READ_CHUNK,
        )
        return cls(proc, ProcessTree(proc.pid))

    async def read_stdout(self) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(READ_CHUNK)

    async def read_stderr(self) -> bytes:
        assert self.proc.stderr is not None
        return await self.proc.stderr.read(READ_CHUNK)

    async def write(self, data: bytes) -> bool:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return False
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def close_stdin(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(OSError):
                stdin.close()

    def suspend(self) -> None:
        """Freeze the whole group (barrier wait in the middle of a turn)."""
        if not self.suspended:
            self._signal_all(signal.SIGSTOP)
            self.suspended = True

    def resume(self) -> None:
        if self.suspended:
            self._signal_all(signal.SIGCONT)
            self.suspended = False

    def terminate(self) -> None:
        """SIGTERM the group and every known descendant now, without waiting (the fast
        half of :meth:`stop`, safe to call from a budget decision on the hot path)."""
        if self.proc.returncode is not None and not self._group_alive():
            return
        self.tree.snapshot()  # before the leader dies: its children are found through it
        if self.suspended:
            self._signal_all(signal.SIGCONT)
            self.suspended = False
        self._signal_all(signal.SIGTERM)

    async def wait(self) -> int:
        return await self.proc.wait()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def stop(self, grace: float = 3.0) -> int:
        """Stop the instance and everything it started; returns the exit code."""
        self.close_stdin()
        self.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), grace)
        await self.reap(grace=min(grace, 1.0))
        return await self.proc.wait()

    async def reap(self, grace: float = 1.0) -> None:
        """After the leader is gone (or stopping): no process it started survives."""
        self.tree.snapshot()
        leftovers = self.tree.alive()
        if leftovers or self._group_alive():
            self._signal_all(signal.SIGTERM)
            _gone, alive = await asyncio.to_thread(psutil.wait_procs, leftovers, grace)
            self._signal_all(signal.SIGKILL)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _signal_all(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for proc in self.tree.alive():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
