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
    {"await_turn": true}                     read one stdin line (a stream-json user turn)
    {"marker": "/path/file"}                 write a timestamp (ns) to a file, then go on
    {"exit": 3}                              exit with this code
    {"signal": "SIGKILL"}                    kill itself with a signal

Without ``exit`` it exits 0 after the last step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_script(steps: list[dict[str, Any]], out: Any) -> int:
    for step in steps:
        if "file" in step:
            data = Path(step["file"]).read_bytes()
            for _ in range(int(step.get("repeat", 1))):
                out.write(data)
            out.flush()
        elif "lines" in step and "stamp" in step:
            data = b"".join(_line(item) for item in step["lines"])
            _write_stamped(out, data, Path(step["stamp"]))
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
        elif "spawn" in step:
            subprocess.Popen(
                step["spawn"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=bool(step.get("new_session", False)),
            )
        elif "await_turn" in step:
            if not sys.stdin.buffer.readline():
                return 0
        elif "marker" in step:
            Path(step["marker"]).write_text(str(time.time_ns()))
        elif "exit" in step:
            return int(step["exit"])
        elif "signal" in step:
            os.kill(os.getpid(), getattr(signal, step["signal"]))
    return 0


def _line(item: Any) -> bytes:
    text = item if isinstance(item, str) else json.dumps(item)
    return text.encode() + b"\n"


def _write_stamped(out: Any, data: bytes, stamp: Path) -> None:
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
    script = os.environ.get("REPLAY_SCRIPT")
    if "--script" in args:
        script = args[args.index("--script") + 1]
    if not script:
        print("replay: set REPLAY_SCRIPT or pass --script", file=sys.stderr)
        return 2
    steps = json.loads(Path(script).read_text())
    try:
        return run_script(steps, sys.stdout.buffer)
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
