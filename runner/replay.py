"""A stand-in for claude that replays a recorded or scripted stream: for benchmarks and
fault tests where the model is not the point. It accepts (and ignores) claude's argv.

The script is a JSON file named by ``REPLAY_SCRIPT`` (or ``--script``): a list of steps,
each one of::

    {"file": "stream.jsonl", "repeat": 1}   write a recorded stream (bytes as they are)
    {"lines": [{...}, "raw text"]}           write these lines (objects as JSON)
    {"lines": [...], "stamp": "/path/file"}  ... and then write "<ns before> <ns after>" to
                                             a file: time.time_ns() just before the write
                                             and just after the flush (SIGTERM and SIGINT
                                             are held meanwhile, so the stamp is never lost)
    {"bytes": 52428800}                      one huge JSON line of this many bytes
    {"stderr": ["text", ...]}                write these lines to stderr
    {"sleep": 0.5}                           pause
    {"spawn": ["sleep", "300"], "new_session": false}   start a grandchild and leave it
    {"spawn": [...], "double_fork": true, "pidfile": "/path"}   ... as a daemon does: fork,
                                             setsid, fork again, the middle one exits (the
                                             daemon is re-parented); "pidfile" gets
                                             "<pid> <create time>" of the started process
    {"await_turn": true}                     read one stdin line (a stream-json user turn)
    {"await_turn": true, "save": "/path"}    ... and write it to a file
    {"marker": "/path/file"}                 write a timestamp (ns) to a file, then go on
    {"wait_file": "/path/file", "timeout": 60}   go on once the test creates this file
                                             (exit 3 if it never comes)
    {"lines": [...], "await_cont": "/path", "timeout": 60}   write these lines, wait to
                                             be stopped and continued (SIGSTOP, SIGCONT: a
                                             barrier's pause), write the time (ns) SIGCONT
                                             came to the file (exit 3 if it never comes)
    {"exit": 3}                              exit with this code
    {"signal": "SIGKILL"}                    kill itself with a signal

``--version`` prints the pinned CLI's version (``REPLAY_VERSION`` overrides it) and runs no
script: the stand-in plays the pinned claude, whose built-ins are recorded, so asking it
its version launches nothing. Without ``exit`` it exits 0 after the last step.
``REPLAY_IGNORE_SIGTERM=1`` makes it ignore SIGTERM (a stubborn claude: only the SIGKILL
after the grace period stops it). ``REPLAY_TERM_STAMP=/path`` makes a SIGTERM write
``time.time_ns()`` to that file before the stand-in exits 143 (when it was stopped).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

# Imported as little as it can: a bench holds a thousand of these at once, each its own
# interpreter, started without site (scripts/replay-claude: python -S). pathlib, typing and
# subprocess would cost ~1.5 MB each process; site-packages (psutil, the coordinator's
# dependencies) are put on the path only by the steps that need them (_site).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run_script(steps: list[dict[str, Any]], out: Any) -> int:
    for step in steps:
        if "await_cont" in step:
            data = b"".join(_line(item) for item in step.get("lines", []))
            if not _await_cont(out, data, step["await_cont"], float(step.get("timeout", 60))):
                return 3
        elif "file" in step:
            data = _read(step["file"])
            for _ in range(int(step.get("repeat", 1))):
                out.write(data)
            out.flush()
        elif "lines" in step and "stamp" in step:
            data = b"".join(_line(item) for item in step["lines"])
            _write_stamped(out, data, step["stamp"])
        elif "lines" in step:
            for item in step["lines"]:
                out.write(_line(item))
            out.flush()
        elif "stderr" in step:
            for text in step["stderr"]:
                sys.stderr.write(text + "\n")
            sys.stderr.flush()
        elif "bytes" in step:
            size = int(step["bytes"])
            head = b'{"type":"user","message":{"role":"user","content":"'
            tail = b'"}}\n'
            out.write(head + b"x" * max(0, size - len(head) - len(tail)) + tail)
            out.flush()
        elif "sleep" in step:
            time.sleep(float(step["sleep"]))
        elif "spawn" in step and step.get("double_fork"):
            _daemon(step["spawn"], step.get("pidfile"))
        elif "spawn" in step:
            import subprocess

            child = subprocess.Popen(
                step["spawn"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=bool(step.get("new_session", False)),
            )
            if step.get("pidfile"):
                _write_pid(step["pidfile"], child.pid)
        elif "await_turn" in step:
            turn = sys.stdin.buffer.readline()
            if step.get("save"):
                _write(step["save"], turn)
            if not turn:
                return 0
        elif "marker" in step:
            _write(step["marker"], str(time.time_ns()).encode())
        elif "wait_file" in step:
            if not _wait_file(step["wait_file"], float(step.get("timeout", 60))):
                return 3
        elif "exit" in step:
            return int(step["exit"])
        elif "signal" in step:
            os.kill(os.getpid(), getattr(signal, step["signal"]))
    return 0


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _site() -> None:
    """site-packages on the path (started without site): for psutil, the coordinator."""
    import site

    site.main()


def _wait_file(path: str, timeout: float) -> bool:
    """The test's go-ahead: it creates ``path`` (a file is what both sides can see)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _await_cont(out: Any, data: bytes, path: str, timeout: float) -> bool:
    """Block SIGCONT, write ``data`` (what makes the engine stop us), wait for SIGCONT: the
    kernel continues a stopped process whether or not the signal is blocked, so its
    arrival is taken here, timed, and never missed (not even one that comes at once)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCONT})
    try:
        out.write(data)
        out.flush()
        got = signal.sigtimedwait({signal.SIGCONT}, timeout)
        at = time.time_ns()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCONT})
    if got is None:
        return False
    _write(path, str(at).encode())
    return True


def _stamp_term(signum: int, frame: object) -> None:
    at = time.time_ns()
    _write(os.environ["REPLAY_TERM_STAMP"], str(at).encode())
    os._exit(128 + signum)


def _daemon(argv: list[str], pidfile: str | None) -> None:
    """fork, setsid, fork, exec in the grandchild; the middle process exits at once and
    this one waits for it, so the daemon is nobody's child (a subreaper's)."""
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.execvp(argv[0], argv)
            if pidfile:
                _write_pid(pidfile, daemon)
        finally:
            os._exit(0)
    os.waitpid(middle, 0)


def _write_pid(path: str, pid: int) -> None:
    _site()
    import psutil

    created = psutil.Process(pid).create_time()
    tmp = os.path.splitext(path)[0] + ".tmp"  # as Path.with_suffix(".tmp")
    _write(tmp, f"{pid} {created!r}".encode())
    os.replace(tmp, path)  # whole or absent for a reader


def _line(item: Any) -> bytes:
    text = item if isinstance(item, str) else json.dumps(item)
    return text.encode() + b"\n"


def _write_stamped(out: Any, data: bytes, stamp: str) -> None:
    """Write and flush ``data``, then record when: for latency measurements (e.g. from the
    line that crosses a budget to the process being gone). A stop signal that comes in the
    meantime takes effect right after the stamp is written."""
    fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    held = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        before = time.time_ns()
        out.write(data)
        out.flush()
        after = time.time_ns()
        os.write(fd, f"{before} {after}".encode())
        os.close(fd)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:  # imported only here: it costs ~90 ms and 6 MB per instance
        _site()
        from coordinator.commands.builtins import OBSERVED_VERSION as PINNED_VERSION

        print(f"{os.environ.get('REPLAY_VERSION', PINNED_VERSION)} (Claude Code)")
        return 0
    script = os.environ.get("REPLAY_SCRIPT")
    if "--script" in args:
        script = args[args.index("--script") + 1]
    if not script:
        print("replay: set REPLAY_SCRIPT or pass --script", file=sys.stderr)
        return 2
    steps = json.loads(_read(script))
    if os.environ.get("REPLAY_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif os.environ.get("REPLAY_TERM_STAMP"):
        signal.signal(signal.SIGTERM, _stamp_term)
    try:
        return run_script(steps, sys.stdout.buffer)
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
