"""A real ``coordinator run`` subprocess over replay instances, with its terminal (a pty it
has as controlling terminal, so closing our end is a real hang-up) or a pipe for output."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.engine.helpers import REPLAY
from tests.faults.harness import wait_for as wait_for
from tests.faults.harness import write_config

COORDINATOR = [sys.executable, "-m", "coordinator.cli"]


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    output: Path
    config: Path
    master: int | None = None  # the pty's master end (None: output goes to a pipe)
    seen: bytearray = field(default_factory=bytearray)
    _reader: threading.Thread | None = None

    _stop: threading.Event = field(default_factory=threading.Event)

    def hang_up(self) -> None:
        """Close the terminal: the kernel sends SIGHUP to the session, writes then fail."""
        assert self._reader is not None
        self._stop.set()  # the reader closes the master end (no close under a read)
        self._reader.join()
        self.master = None

    def close_pipe(self) -> None:
        """The reader of our output went away (a dead ssh, a killed ``tee``)."""
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def text(self) -> str:
        return self.seen.decode(errors="replace")

    def results(self) -> dict[str, Any]:
        return dict(json.loads(self.output.read_text()))


def _drain(fd: int, into: bytearray, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            into += chunk
    finally:
        os.close(fd)


def _pty_preexec() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty (our stdin) becomes our terminal


@contextmanager
def coordinator(
    tmp_path: Path,
    scripts: dict[str, list[dict[str, Any]]],
    orchestration: dict[str, Any] | None = None,
    *,
    args: Sequence[str] = (),
    tty: bool = False,
    database_url: str | None = None,
    claude_bin: str = REPLAY,
    env: dict[str, str] | None = None,
) -> Iterator[Run]:
    config = write_config(tmp_path, scripts, orchestration)
    output = tmp_path / "results.json"
    argv = [
        *COORDINATOR,
        "run",
        "--config",
        str(config),
        "--claude-bin",
        claude_bin,
        *(["--database-url", database_url] if database_url else ["--no-db"]),
        "--output",
        str(output),
        "--workspace",
        str(tmp_path),
        "--status-report-interval",
        "0.2",
        "--log-file",
        str(tmp_path / "coordinator.log"),
        *args,
    ]
    child_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    if tty:
        master, slave = os.openpty()
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_pty_preexec, env=child_env
        )
        os.close(slave)
        run = Run(proc, output, config, master=master)
        run._reader = threading.Thread(
            target=_drain, args=(master, run.seen, run._stop), daemon=True
        )
        run._reader.start()
    else:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env,
        )
        run = Run(proc, output, config)
    try:
        yield run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if run._reader is not None and run.master is not None:
            run._stop.set()
            run._reader.join()
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()
