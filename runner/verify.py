"""Run an instance's verify command: the one adapter that starts it.

Like an instance, it runs in its own session and process group with a mark of its own
(:class:`runner.process.InstanceProcess`), so stopping it reaches everything it started;
a timeout, a cancel (Ctrl-C of the coordinator) and any exception stop and reap the whole
group before this returns. argv only, never a shell; stdin is /dev/null.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import aio
from runner.groups import group_alive
from runner.process import InstanceProcess, spawn_failure

STDOUT_TAIL = 1 << 16  # the last line is what counts; a tail is plenty
STOP_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class CommandRun:
    exit_code: int | None  # None: not started, timed out or cancelled
    duration_s: float
    timed_out: bool
    cancelled: bool
    stdout_tail: bytes
    stderr_tail: bytes
    error: str | None = None  # why it could not start


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    cancel: asyncio.Event,
    track: Callable[[int, str | None], None] | None = None,
    forget: Callable[[int], None] | None = None,
) -> CommandRun:
    started = time.monotonic()
    try:
        proc = await InstanceProcess.spawn(argv, cwd=cwd, env=env, stdin_pipe=False)
    except (OSError, ValueError) as exc:
        why = spawn_failure(exc, argv, cwd, env).replace("claude executable", "executable")
        return CommandRun(None, time.monotonic() - started, False, False, b"", b"", why)
    if track is not None:
        track(proc.pgid, proc.mark)
    out = bytearray()
    err = bytearray()
    readers = [
        asyncio.create_task(_drain(proc.read_stdout, out)),
        asyncio.create_task(_drain(proc.read_stderr, err)),
    ]
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(cancel.wait())
    timed_out = cancelled = False
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            timed_out = stopper not in done
            cancelled = not timed_out
            await proc.stop(STOP_GRACE_S)
        else:
            await proc.reap()  # what it left running in the background goes too
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(asyncio.gather(*readers, return_exceptions=True), 5.0)
    finally:
        stopper.cancel()
        for task in readers:
            task.cancel()
        if proc.returncode is None or _group_alive(proc.pgid):
            await asyncio.shield(proc.stop(0.5))
        waiter.cancel()
        if forget is not None:
            forget(proc.pgid)
    code = None if timed_out or cancelled else proc.returncode
    return CommandRun(
        code, time.monotonic() - started, timed_out, cancelled, bytes(out), bytes(err)
    )


async def _drain(read: Callable[[], Awaitable[bytes]], into: bytearray) -> None:
    while True:
        chunk = await read()
        if not chunk:
            return
        into.extend(chunk)
        if len(into) > 2 * STDOUT_TAIL:
            del into[: len(into) - STDOUT_TAIL]


def _group_alive(pgid: int) -> bool:
    return group_alive(pgid)
