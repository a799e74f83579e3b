"""The only module that touches an instance's OS process.

Each instance runs in its own session and process group. Stopping is: close stdin,
SIGTERM the group and every descendant ever seen, wait a grace period, SIGKILL whatever is
left, reap. Descendants are tracked because a tool may start processes in a new session
(out of the group's reach); the coordinator also makes itself a child subreaper so such
orphans are re-parented to it, not to init, and can still be found.

A process that left the group and whose parent died (``setsid daemon &``, a double fork)
is no longer reachable through the leader. So every instance's environment carries a mark
of its own (``COORDINATOR_INSTANCE_MARK``), which descendants inherit: when the instance
ends, every process still carrying its mark is stopped too (read from
``/proc/<pid>/environ``, so only processes of our own user, or any as root). Processes are
named by (pid, create time), and psutil checks that identity before each signal, so a
recycled pid is never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import secrets
import signal
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from runner import aio
from runner.groups import group_alive

PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 1 << 18
MARK_ENV = "COORDINATOR_INSTANCE_MARK"
REAP_PASSES = 5  # a fork under way while we look is caught by the next pass


def new_mark() -> str:
    return secrets.token_hex(12)


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
        """Add the leader's descendants now: walked from the leader through the kernel's
        per-thread children lists where it keeps them (cost: the tree's size), else
        psutil's pass over the whole process table (a stop of many instances at once paid
        that pass for each, one after another)."""
        if CHILDREN_LISTS:
            pids = _walk_children(self.leader)
        else:
            try:
                pids = [p.pid for p in psutil.Process(self.leader).children(recursive=True)]
            except psutil.Error:
                pids = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self.seen.add(ProcIdentity(pid, psutil.Process(pid).create_time()))
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


def _children_lists() -> bool:
    """Does this kernel keep ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN)?"""
    me = os.getpid()
    return os.path.exists(f"/proc/{me}/task/{me}/children")


CHILDREN_LISTS = _children_lists()


def _walk_children(leader: int) -> list[int]:
    """Every descendant of ``leader`` (a moment's view: a fork under way may be missed,
    which the stop's later passes catch), from the children list of each of its threads
    (a child is listed under the thread that forked it while that thread lives)."""
    found: list[int] = []
    seen = {leader}
    stack = [leader]
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    found.append(kid)
                    stack.append(kid)
    return found


def descendants_by_leader(leaders: set[int]) -> dict[int, set[ProcIdentity]]:
    """Every descendant of each leader: walked from the leaders where the kernel keeps
    children lists (the trees' size: a runner scanning every second no longer reads every
    process of a host that runs a thousand), else one pass over the process table."""
    if CHILDREN_LISTS:
        walked: dict[int, set[ProcIdentity]] = {}
        for leader in leaders:
            tree: set[ProcIdentity] = set()
            for pid in _walk_children(leader):
                with contextlib.suppress(psutil.Error):
                    tree.add(ProcIdentity(pid, psutil.Process(pid).create_time()))
            walked[leader] = tree
        return walked
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


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss(leader: int, descendants: Collection[ProcIdentity]) -> int | None:
    """Resident memory (bytes) of a leader and its live descendants, summed (pages shared
    between them count for each); None when the leader is gone. Read straight from
    ``/proc/<pid>/statm`` (a psutil object per process costs several times more): the
    descendants were found by the scan just before, so a pid recycled in between is not
    worth a second read per process."""
    total = _rss(leader)
    if total is None:
        return None
    for ident in descendants:
        total += _rss(ident.pid) or 0
    return total


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        try:  # not Linux: psutil knows the platform's way
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None


def marked_processes(marks: Collection[str], exclude: Collection[int] = ()) -> list[psutil.Process]:
    """Every live process whose environment carries one of ``marks`` (one pass over
    /proc; processes we may not read are not ours)."""
    found = processes_by_mark(marks, exclude)
    return [proc for procs in found.values() for proc in procs]


def processes_by_mark(
    marks: Collection[str], exclude: Collection[int] = ()
) -> dict[str, list[psutil.Process]]:
    """:func:`marked_processes`, by the mark each carries."""
    if not marks:
        return {}
    needles = {f"{MARK_ENV}={mark}".encode(): mark for mark in marks}
    found: dict[str, list[psutil.Process]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in exclude or pid == os.getpid():
            continue
        try:
            proc = psutil.Process(pid)  # identity first: then what we read is its own
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            hits = [needles[v] for v in env if v in needles]
            if hits and proc.status() != psutil.STATUS_ZOMBIE:
                for mark in hits:
                    found.setdefault(mark, []).append(proc)
        except (OSError, psutil.Error):
            continue
    return found


class MarkScans:
    """Reaps under way at once (a budget block stops every instance of a runner) share
    their passes over /proc: the marks asked for while a pass runs go into the next one,
    so N concurrent stops cost about two passes, not N (each reads every process's
    environment). One per event loop (:func:`mark_scans`)."""

    def __init__(self) -> None:
        self._asked: dict[str, list[asyncio.Future[list[psutil.Process]]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def find(self, mark: str, exclude: Collection[int] = ()) -> list[psutil.Process]:
        waiter: asyncio.Future[list[psutil.Process]] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(mark, []).append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._passes(), name="mark-scans")
        procs = await waiter
        return [p for p in procs if p.pid not in exclude]

    async def _passes(self) -> None:
        while self._asked:
            asked, self._asked = self._asked, {}
            try:
                found = await asyncio.to_thread(processes_by_mark, set(asked))
            except asyncio.CancelledError:  # the loop is going: so are its reaps
                for waiters in asked.values():
                    for waiter in waiters:
                        waiter.cancel()
                raise
            except Exception as exc:  # every waiter hears of it
                for waiters in asked.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                continue
            for mark, waiters in asked.items():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(found.get(mark, []))


_MARK_SCANS: dict[asyncio.AbstractEventLoop, MarkScans] = {}


def mark_scans() -> MarkScans:
    loop = asyncio.get_running_loop()
    scans = _MARK_SCANS.get(loop)
    if scans is None:
        for old in [lp for lp in _MARK_SCANS if lp.is_closed()]:
            del _MARK_SCANS[old]
        scans = _MARK_SCANS[loop] = MarkScans()
    return scans


class InstanceProcess:
    """A running claude (or stand-in) process: spawn, read, write turns, suspend, stop."""

    def __init__(
        self, proc: asyncio.subprocess.Process, tree: ProcessTree, mark: str | None = None
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the leader's pid is the group id
        self.tree = tree
        self.mark = mark
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
        """Raises OSError (and ValueError for a NUL byte) as ``subprocess`` does: the
        caller names the failure (see :func:`spawn_failure`)."""
        mark = new_mark()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env={**env, MARK_ENV: mark},
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=READ_CHUNK,
        )
        return cls(proc, ProcessTree(proc.pid), mark)

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

    def kill(self) -> None:
        """SIGKILL the group and every known descendant now (a deadline is due: no grace)."""
        if self.proc.returncode is not None and not self._group_alive():
            return
        self._signal_all(signal.SIGKILL)

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
            await aio.wait_for(self.proc.wait(), grace)
        await self.reap(grace=min(grace, 1.0))
        return await self.proc.wait()

    async def reap(self, grace: float = 1.0) -> None:
        """After the leader is gone (or stopping): no process it started survives, also
        none that left its group and session (found by the instance's mark)."""
        for _ in range(REAP_PASSES):
            leftovers = await self._leftovers()
            if not leftovers and not self._group_alive():
                break
            self._signal_all(signal.SIGTERM)
            for proc in leftovers:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGTERM)
                    proc.send_signal(signal.SIGCONT)  # a stopped process acts on it now
            _gone, alive = await asyncio.to_thread(psutil.wait_procs, leftovers, grace)
            self._signal_all(signal.SIGKILL)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            # the SIGKILLed ones: re-parented orphans are our children, reap their zombies
            await asyncio.to_thread(psutil.wait_procs, alive, grace)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    async def _leftovers(self) -> list[psutil.Process]:
        """Every process of this instance still alive, but its leader (asyncio waits for
        that one): descendants seen through it, and everything carrying its mark (in a
        pass over /proc shared with the other reaps under way)."""
        self.tree.snapshot()  # the tree's size, not the table's (CHILDREN_LISTS)
        out = {p.pid: p for p in self.tree.alive() if p.pid != self.pid}
        if self.mark is not None:
            for proc in await mark_scans().find(self.mark, exclude={self.pid}):
                out.setdefault(proc.pid, proc)
        return list(out.values())

    def _group_alive(self) -> bool:
        return group_alive(self.pgid)

    def _signal_all(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for proc in self.tree.alive():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)


# ---------------------------------------------------------------- spawn failures
MAX_ARG_STRLEN = 32 * 4096  # Linux: the longest single argument or environment string


def spawn_failure(
    exc: OSError | ValueError, argv: Sequence[str], cwd: Path, env: Mapping[str, str]
) -> str:
    """One line naming why ``argv`` could not be started in ``cwd`` (the OS error in it)."""
    program = argv[0]
    if isinstance(exc, ValueError):
        return _bad_value(exc, argv, env)
    code = exc.errno
    if code == errno.ENOENT:
        if exc.filename == str(cwd) or not cwd.is_dir():
            return f"workspace not found: {cwd}"
        path = Path(program) if os.sep in program else _which(program, env)
        if path is None or not path.exists():
            return f"claude executable not found: {program}"
        head = _head(path)
        if head.startswith(b"#!"):
            line = head[2:].split(b"\n", 1)[0].strip().decode(errors="replace")
            interpreter = line.split()[0] if line.split() else "(none)"
            return f"bad interpreter {interpreter} in {program}: {exc.strerror}"
        if head.startswith(b"\x7fELF"):
            return (
                f"cannot start {program}: its ELF loader is missing (a binary for another system?)"
            )
        return f"cannot start {program}: {exc.strerror}"
    if code == errno.ENOEXEC:
        return (
            f"exec format error: {program} is neither a script with a #! line nor a program "
            f"for this machine ({os.uname().machine})"
        )
    if code == errno.E2BIG:
        sizes = [len(a.encode()) + 1 for a in argv]
        env_size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
        largest = max(sizes) - 1
        return (
            f"argument list too long for {program}: {sum(sizes):,} bytes of arguments "
            f"(largest {largest:,}; Linux allows {MAX_ARG_STRLEN:,} per argument) "
            f"and {env_size:,} bytes of environment: {exc.strerror}"
        )
    return f"cannot start: {exc}"


def _bad_value(exc: ValueError, argv: Sequence[str], env: Mapping[str, str]) -> str:
    for index, arg in enumerate(argv):
        if "\0" in arg:
            return f"cannot start {argv[0]}: a NUL byte in argument {index} ({exc})"
    for key, value in env.items():
        if "\0" in key or "\0" in value:
            return f"cannot start {argv[0]}: a NUL byte in environment variable {key!r} ({exc})"
        if "=" in key or not key:
            return f"cannot start {argv[0]}: bad environment variable name {key!r} ({exc})"
    return f"cannot start {argv[0]}: {exc}"


def _which(program: str, env: Mapping[str, str]) -> Path | None:
    import shutil

    found = shutil.which(program, path=env.get("PATH", os.defpath))
    return Path(found) if found else None


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(256)
    except OSError:
        return b""
