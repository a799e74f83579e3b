"""``coordinator run ... --detach``: check everything in the foreground, then go on as a
daemon that no terminal can end.

The foreground loads and plans the config (which fixes the orchestration id, the results
path and an absolute ``--start-at``), runs the preflight, and starts the daemon as a fresh
process: ``python -m coordinator.cli run <the same flags> --orchestration-id ID --output
PATH --detached-ready-fd N``, in a session of its own, stdin from /dev/null, stdout and
stderr to ``<state>/runs/<id>.out``, the write end of a pipe passed as fd N. No fork of a
process with an event loop or threads: the daemon is a new interpreter.

The daemon takes an exclusive lock on ``<state>/runs/<id>.pid`` (held for its whole life;
a second detached run of the id is refused while it is held, a stale file whose lock is
free is simply taken over), runs the checks a foreground run makes (the database among
them), and writes ``ready`` on the pipe before any ``--start-at`` wait, or the one line of
the error that refused it (``error CODE MESSAGE``). The foreground relays that error with
its exit code, or prints how to watch and stop the run and exits 0; if the daemon dies
before either, it says so and where to look (exit 1).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import click
import orjson
import structlog
from rich.console import Console

from coordinator import app
from coordinator.control.pidfile import (
    PidInfo,
    console_path,
    parse,
    pidfile_path,
    render,
    runs_dir,
    waiting_state,
)
from coordinator.db.dsn import mask_dsn
from coordinator.errors import CoordinatorError, PreflightError, UsageError
from coordinator.plan import RunPlan
from coordinator.preflight import writable_dir
from coordinator.results import default_output_path
from coordinator.settings import Settings

log = structlog.get_logger("coordinator.detach")

READY = "ready"
READY_FD_OPTION = "--detached-ready-fd"
# what the daemon's argv never carries over from the foreground's flags
_NOT_PASSED = frozenset({"detach", "detached_ready_fd", "dry_run", "json_output"})
# flags that may carry a password: they travel on the daemon's stdin, never in its argv
# (which ``ps`` shows to every user for the whole night)
SECRET_FLAGS = frozenset({"database_url"})


class AlreadyRunningError(CoordinatorError):
    """The orchestration id's pidfile is locked: a detached coordinator runs it now."""

    exit_code = 2


class DetachRefused(CoordinatorError):
    """The daemon refused to start (its one-line error, relayed with its exit code)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---- the pidfile and its lock ---------------------------------------------------------


class HeldPidfile:
    """The pidfile, locked (``flock``, exclusive) by this process until :meth:`release`."""

    def __init__(self, path: Path, fd: int, info: PidInfo) -> None:
        self.path, self._fd, self.info = path, fd, info

    @classmethod
    def acquire(cls, path: Path, info: PidInfo) -> HeldPidfile:
        for _ in range(20):  # only a file removed between our open and our lock loops
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise PreflightError(f"pidfile {path}: cannot lock it: {exc}") from None
                raise AlreadyRunningError(
                    _already_running(path, info.orchestration_id, text)
                ) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed it as it ended: lock the new one
                os.close(fd)
                continue
            held = cls(path, fd, info)
            held._write()
            return held
        raise PreflightError(f"pidfile {path}: it keeps being replaced; is another run racing?")

    def update(self, state: str) -> None:
        self.info = self.info.with_state(state)
        with contextlib.suppress(OSError):  # a full disk must not end the run
            self._write()

    def _write(self) -> None:
        data = render(self.info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Remove the file (still locked, so nobody takes a file on its way out), unlock."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1


def refuse_if_held(path: Path, orchestration_id: str) -> None:
    """The foreground's early look: a pidfile whose lock is held means a live run (a file
    whose lock is free is stale and no obstacle). The daemon's own lock is what decides."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PreflightError(f"pidfile {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            raise AlreadyRunningError(_already_running(path, orchestration_id, text)) from None
    finally:
        os.close(fd)  # (and with it our shared lock)


def _already_running(path: Path, orchestration_id: str, text: str) -> str:
    try:
        held = parse(text, str(path))
    except CoordinatorError:
        who = "another coordinator"
    else:
        who = f"pid {held.pid} on {held.host or '?'} since {held.started or '?'}"
        if held.state:
            who += f", {held.state}"
    return (
        f"orchestration {orchestration_id!r} is already running detached ({who}; pidfile "
        f"{path}); stop it first, or choose another --orchestration-id"
    )


# ---- the daemon's side ----------------------------------------------------------------


class DetachedChild:
    """The daemon's end of the readiness pipe and its pidfile.

    As a context manager around the whole detached run: an error that refuses the run
    before it is ready goes back on the pipe as one line; at the end the pidfile is
    removed and its lock released, on every exit path."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)  # no instance or tool gets it
        self._pidfile: HeldPidfile | None = None

    def receive_secrets(self) -> dict[str, Any]:
        """What the foreground sent on stdin (the flags kept out of argv); stdin is then
        /dev/null, as a daemon's is."""
        data = sys.stdin.buffer.read()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        try:
            sent = orjson.loads(data)
        except orjson.JSONDecodeError:
            sent = None
        if not isinstance(sent, dict):  # never run on other settings than the user gave
            raise UsageError("the foreground of --detach went away before it passed the run on")
        return {k: v for k, v in sent.items() if k in SECRET_FLAGS}

    def lock(
        self, state_dir: Path, orchestration_id: str, log_file: Path | None, results: Path
    ) -> None:
        info = PidInfo(
            pid=os.getpid(),
            orchestration_id=orchestration_id,
            host=socket.gethostname(),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            state="starting",
            log_file=str(log_file or ""),
            results=str(results),
        )
        self._pidfile = HeldPidfile.acquire(pidfile_path(state_dir, orchestration_id), info)

    def hooks(self) -> app.RunHooks:
        return app.RunHooks(ready=self._ready, launching=self._launching)

    def _ready(self, plan: RunPlan) -> None:
        if self._pidfile is not None:
            start_at = plan.start_at
            if start_at is not None:
                self._pidfile.update(waiting_state(start_at.isoformat(timespec="seconds")))
            else:
                self._pidfile.update("running")
        log.info("detached run ready", orchestration_id=plan.orchestration_id, pid=os.getpid())
        self._send(READY)

    def _launching(self) -> None:
        if self._pidfile is not None:
            self._pidfile.update("running")

    def _send(self, line: str | None) -> None:
        """One line to the foreground (None: none), then the pipe is closed for good."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # the foreground may be gone (its terminal closed while it waited): go on regardless
        if line is not None:
            with contextlib.suppress(OSError):
                os.write(fd, (" ".join(line.split()) + "\n").encode())
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> DetachedChild:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, CoordinatorError):
                self._send(f"error {exc.exit_code} {exc}")
            elif isinstance(exc, click.ClickException):
                self._send(f"error {exc.exit_code or 2} {exc.format_message()}")
            self._send(None)  # nothing said yet: the foreground sees the pipe close
        finally:
            if self._pidfile is not None:
                self._pidfile.release()


# ---- the foreground's side ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detached:
    """What the foreground knows of the daemon it started."""

    pid: int
    orchestration_id: str
    pidfile: Path
    console_file: Path
    log_file: Path | None
    results: Path
    start_at: datetime | None
    database: bool
    database_url: str | None

    def commands(self) -> dict[str, str]:
        oid = shlex.quote(self.orchestration_id)
        db = (
            f" --database-url {shlex.quote(mask_dsn(self.database_url))}"
            if self.database_url
            else ""
        )
        kill = f"kill -TERM {self.pid}"
        if not self.database:
            return {"stop": kill}
        return {
            "attach": f"coordinator attach {oid}{db}",
            "status": f"coordinator status {oid}{db}",
            "stop": f"coordinator stop {oid}{db}",
            "signal": kill,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "orchestration_id": self.orchestration_id,
            "pid": self.pid,
            "state": "waiting" if self.start_at else "running",
            "start_at": self.start_at.isoformat() if self.start_at else None,
            "pidfile": str(self.pidfile),
            "console": str(self.console_file),
            "log_file": str(self.log_file) if self.log_file else None,
            "results": str(self.results),
            "commands": self.commands(),
        }

    def how_to(self) -> str:
        when = (
            f"waits until {self.start_at.isoformat(timespec='seconds')}, then runs"
            if self.start_at
            else "runs"
        )
        lines = [f"Detached: orchestration {self.orchestration_id} {when} as pid {self.pid}."]
        cmds = self.commands()
        if self.database:
            lines += [
                f"  watch:    {cmds['attach']}",
                f"  status:   {cmds['status']}",
                f"  stop:     {cmds['stop']}   (or: {cmds['signal']})",
            ]
        else:
            lines += [f"  stop:     {cmds['stop']}   (--no-db: no attach or status)"]
        lines += [
            f"  log:      {self.log_file or 'none (see the console file)'}",
            f"  console:  {self.console_file}",
            f"  results:  {self.results}",
            f"  pidfile:  {self.pidfile}",
        ]
        return "\n".join(lines)


def child_argv(
    params: Iterable[click.Parameter], kw: Mapping[str, Any], overrides: Mapping[str, Any]
) -> list[str]:
    """The daemon's argv: the run's own flags as the foreground parsed them (values, not
    the words typed, so nothing is re-read differently later), with ``overrides``."""
    argv = [sys.executable, "-m", "coordinator.cli", "run"]
    positional: list[str] = []
    for param in params:
        if isinstance(param, click.Argument) and param.name and kw.get(param.name) is not None:
            positional.append(str(kw[param.name]))  # direct mode's command
        if not isinstance(param, click.Option) or not param.name:
            continue
        if param.name in _NOT_PASSED | SECRET_FLAGS:
            continue
        value = overrides.get(param.name, kw.get(param.name))
        if value is None or value is False or value == ():
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            argv.append(flag)
        elif param.multiple:
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return [*argv, "--", *positional] if positional else argv


def detach(
    req: app.RunRequest,
    settings: Settings,
    console: Console,
    *,
    params: Iterable[click.Parameter],
    kw: Mapping[str, Any],
    log_file: Path | None,
) -> int:
    """The foreground of ``run --detach``: refuse what a run would refuse, start the daemon,
    relay its verdict."""
    if req.dry_run:
        raise UsageError(
            "--detach with --dry-run: a dry run launches nothing, so there is nothing to "
            "detach; drop one of them"
        )
    plan = app.make_plan(req, settings, need_claude=True)
    state_dir = app.state_dir_of(settings)
    warnings = app.preflight(plan, req, os.environ, state_dir=state_dir)
    writable_dir(
        runs_dir(state_dir),
        "state directory (a detached run keeps its pidfile there)",
        create=True,
        hint=" (set COORDINATOR_STATE_DIR)",
    )
    oid = plan.orchestration_id
    results = (req.output or default_output_path(plan, datetime.now())).absolute()
    start_at = plan.start_at
    if start_at is not None and start_at <= datetime.now().astimezone():
        start_at = None  # a moment ago: start at once (the daemon must not re-judge it late)
    overrides: dict[str, Any] = {
        "orchestration_id": oid,
        "output": results,
        "start_at": start_at.isoformat() if start_at else None,
    }
    refuse_if_held(pidfile_path(state_dir, oid), oid)
    console_file = console_path(state_dir, oid)
    fresh_console = not console_file.exists()
    try:
        out = console_file.open("ab")
    except OSError as exc:
        raise PreflightError(f"console file {console_file}: {exc.strerror or exc}") from None
    read_end, write_end = os.pipe()
    try:
        with out:
            proc = subprocess.Popen(
                [*child_argv(params, kw, overrides), READY_FD_OPTION, str(write_end)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                start_new_session=True,
                pass_fds=(write_end,),
            )
    finally:
        os.close(write_end)
    assert proc.stdin is not None
    with contextlib.suppress(OSError), proc.stdin:  # a few bytes: the pipe's buffer takes them
        proc.stdin.write(orjson.dumps({k: kw.get(k) for k in SECRET_FLAGS}))
    try:
        verdict = _await_verdict(read_end, proc)
    finally:
        os.close(read_end)
    detached = Detached(
        pid=proc.pid,
        orchestration_id=oid,
        pidfile=pidfile_path(state_dir, oid),
        console_file=console_file,
        log_file=log_file,
        results=results,
        start_at=start_at,
        database=not (req.no_database or settings.no_database),
        database_url=req.database_url,
    )
    if verdict is None:
        code = _exit_code(proc)
        raise CoordinatorError(
            f"the detached coordinator (pid {proc.pid}) ended before it was ready"
            f"{f' (exit {code})' if code is not None else ''}; see {console_file}"
            f"{f' and {log_file}' if log_file else ''}"
        )
    if verdict != READY:
        _, _, rest = verdict.partition(" ")
        code_text, _, message = rest.partition(" ")
        _exit_code(proc)
        if fresh_console:  # it holds only the line the user is shown now
            with contextlib.suppress(OSError):
                console_file.unlink()
        raise DetachRefused(message or verdict, int(code_text) if code_text.isdigit() else 1)
    app.say_warnings(warnings)  # once the daemon is ready: a refusal stays one line
    if req.json_output:
        sys.stdout.write(orjson.dumps(detached.as_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        console.print(detached.how_to(), highlight=False, soft_wrap=True)
    return 0


def _await_verdict(fd: int, proc: subprocess.Popen[bytes]) -> str | None:
    """The daemon's one line (``ready`` or ``error CODE MESSAGE``); None: it closed the pipe
    (or died) without one. Ctrl-C meanwhile stops the daemon: nothing was launched yet."""
    data = b""
    try:
        while b"\n" not in data:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        _exit_code(proc)
        raise
    line, newline, _ = data.partition(b"\n")
    text = line.decode(errors="replace").strip()
    return text if newline and text else None


def _exit_code(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    """Reap the daemon that refused or died (no zombie); None if it did not end in time."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
