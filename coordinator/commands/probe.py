"""Ask the real ``claude`` CLI for its ``system/init`` event, without spending a token.

The CLI writes ``system/init`` (session id, model, tools, ``slash_commands``, skills,
``claude_code_version``, ``apiKeySource``, ...) before its first API request. Pointing
``ANTHROPIC_BASE_URL`` at a closed loopback port guarantees that request goes nowhere,
so the probe is free and works offline. Once the init line is read the process group is
terminated (SIGTERM, then SIGKILL) and reaped: nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from coordinator.errors import ClaudeNotFoundError, CoordinatorError

UNREACHABLE_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens, connect fails
PLACEHOLDER_API_KEY = "probe-placeholder-key"
_STDERR_KEEP = 8192  # bytes of stderr kept for error messages


class ProbeError(CoordinatorError):
    """The CLI ended, or timed out, without writing a ``system/init`` event."""


def probe_env(
    home: Path | None = None,
    base: Mapping[str, str] | None = None,
    *,
    placeholder_key: bool = True,
) -> dict[str, str]:
    """The environment a probe runs with (pure; exposed for tests and for ``doctor``).

    ``base`` defaults to ``os.environ``. ``CLAUDECODE`` (nested-session guard) is removed.
    When ``home`` is given, ``HOME`` is set to it and ``CLAUDE_CONFIG_DIR`` is removed, so
    the CLI sees exactly ``home/.claude`` and never the caller's real configuration.
    ``placeholder_key`` sets ``ANTHROPIC_API_KEY`` when the base has none; pass False to
    observe the real credential source (``apiKeySource``): no request can leave anyway.
    """
    env = dict(os.environ if base is None else base)
    env.pop("CLAUDECODE", None)
    env["ANTHROPIC_BASE_URL"] = UNREACHABLE_BASE_URL
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    env["DISABLE_AUTOUPDATER"] = "1"
    if home is not None:
        env["HOME"] = str(home)
        env.pop("CLAUDE_CONFIG_DIR", None)
    if placeholder_key and not env.get("ANTHROPIC_API_KEY"):
        env["ANTHROPIC_API_KEY"] = PLACEHOLDER_API_KEY
    return env


def probe_argv(claude_bin: str, session_id: str | None = None) -> list[str]:
    """The command line of a probe (pure)."""
    sid = session_id or str(uuid.uuid4())
    return [
        claude_bin,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
        "--session-id",
        sid,
        "--",
        "hello",
    ]


def parse_init_line(line: bytes) -> dict[str, Any] | None:
    """The event dict if ``line`` is a ``system/init`` event, else None (pure)."""
    stripped = line.strip()
    if not stripped.startswith(b"{"):
        return None
    try:
        event = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") != "system":
        return None
    return event if event.get("subtype") == "init" else None


async def probe_init(
    claude_bin: str,
    workspace: Path,
    home: Path | None = None,
    timeout: float = 30,
    *,
    env: Mapping[str, str] | None = None,
    placeholder_key: bool = True,
    kill_grace: float = 5.0,
    on_start: Callable[[int], object] | None = None,
    argv: Sequence[str] | None = None,
    stdin_line: bytes | None = None,
) -> dict[str, Any]:
    """Run ``claude`` in ``workspace`` until it writes ``system/init``; return that event.

    ``home`` replaces ``HOME`` (see :func:`probe_env`). Raises :class:`ClaudeNotFoundError`
    when the binary cannot be started and :class:`ProbeError` when no init event arrives
    within ``timeout`` seconds or the CLI exits first (its stderr tail is in the message).
    ``kill_grace`` is the wait between SIGTERM and SIGKILL; ``on_start`` receives the pid
    (which is also the process group id) once the child is running. ``argv`` replaces the
    probe's own command line (to check that a planned instance's flags are accepted);
    ``stdin_line`` is written first when that command line reads stream-json input.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *(argv if argv is not None else probe_argv(claude_bin)),
            cwd=workspace,
            env=probe_env(home, env, placeholder_key=placeholder_key),
            stdin=asyncio.subprocess.DEVNULL if stdin_line is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        if exc.filename is not None and str(exc.filename) == str(workspace):
            raise ProbeError(f"cannot enter workspace {workspace}: {exc.strerror}") from exc
        raise ClaudeNotFoundError(f"cannot start {claude_bin!r}: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    if stdin_line is not None and proc.stdin is not None:
        proc.stdin.write(stdin_line)
    stderr_tail = bytearray()
    drain = asyncio.create_task(_drain(proc.stderr, stderr_tail))
    try:
        if on_start is not None:
            on_start(proc.pid)
        try:
            async with asyncio.timeout(timeout):
                event = await _read_init(proc.stdout)
        except TimeoutError:
            event = None
            reason = f"no system/init event within {timeout:g}s"
        else:
            reason = "exited without a system/init event"
    finally:
        await _terminate_group(proc, kill_grace)
        await _finish(drain, kill_grace)  # a member that left the group may hold stderr
    if event is None:
        tail = stderr_tail.decode(errors="replace").strip()
        detail = f": {tail.splitlines()[-1]}" if tail else ""
        raise ProbeError(
            f"{claude_bin} {reason} (exit {proc.returncode}){detail}",
            workspace=str(workspace),
            stderr=tail,
        )
    return event


def probe_init_sync(
    claude_bin: str,
    workspace: Path,
    home: Path | None = None,
    timeout: float = 30,
    *,
    env: Mapping[str, str] | None = None,
    placeholder_key: bool = True,
) -> dict[str, Any]:
    """:func:`probe_init` for callers without an event loop (not from inside one)."""
    return asyncio.run(
        probe_init(claude_bin, workspace, home, timeout, env=env, placeholder_key=placeholder_key)
    )


async def _read_init(stdout: asyncio.StreamReader) -> dict[str, Any] | None:
    """Frame stdout on ``\\n`` bytes (no line-length cap) until the init event or EOF."""
    pending = bytearray()
    while chunk := await stdout.read(1 << 16):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end])
            del pending[: end + 1]
            if (event := parse_init_line(line)) is not None:
                return event
    return parse_init_line(bytes(pending))


async def _drain(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Read a stream to EOF so the child never blocks on a full pipe; keep the tail."""
    while chunk := await stream.read(1 << 16):
        tail += chunk
        del tail[:-_STDERR_KEEP]


async def _finish(task: asyncio.Task[None], grace: float) -> None:
    try:
        async with asyncio.timeout(grace):
            await task
    except TimeoutError:
        task.cancel()


async def _terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, reap the child.

    The child was started with ``start_new_session=True``, so its pid is the group id.
    A final SIGKILL sweeps group members that outlive the leader; while any member is
    alive the group id cannot be reused, so this never signals an unrelated process.
    """
    pgid = proc.pid
    if proc.returncode is None:
        _killpg(pgid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            _killpg(pgid, signal.SIGKILL)
    _killpg(pgid, signal.SIGKILL)
    await proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
