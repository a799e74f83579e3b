"""The built-ins of the claude that will run: recorded for the pinned version, else asked
of that CLI (its ``system/init``: free, offline) and cached per version.

What is cached, and why only that: a probe in an empty git root with an empty HOME lists
exactly what the binary ships (built-in commands and bundled skills); that depends on the
CLI version alone, so the version is the key. Project and user commands and skills are
files that change between runs: :func:`coordinator.commands.discovery.scan` reads them
fresh every time and merges them over these names, as the CLI does. Not seen by either:
plugins, managed (policy) directories, and commands that only a claude.ai login offers.

Cache: ``<state dir>/claude-builtins.json``, mode 0600, replaced atomically, one entry per
version. One that cannot be read or parsed is ignored with one warning (and replaced by
the next probe); one that cannot be written costs a probe next time, with one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from coordinator.commands.builtins import RECORDED, Builtins
from coordinator.commands.probe import ProbeError, probe_env, probe_init
from coordinator.errors import ClaudeNotFoundError

CACHE_NAME = "claude-builtins.json"
CACHE_FORMAT = 1
VERSION_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 60.0

_VERSION = re.compile(r"\s*v?(?P<version>\d+\.\d+\.\d+[0-9A-Za-z.+-]*)")
T = TypeVar("T")
Warn = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class Asked:
    """The built-ins of one claude (``builtins.source``: recorded, cache or probe), and
    the cache file consulted (None for the pinned version: nothing to ask)."""

    builtins: Builtins
    claude_bin: str
    cache_path: Path | None = None


def parse_version(text: str) -> str | None:
    """``"2.1.329 (Claude Code)"`` -> ``"2.1.329"`` (pure)."""
    match = _VERSION.match(text)
    return match["version"] if match else None


def builtins_from_init(event: Mapping[str, Any], version: str | None = None) -> Builtins:
    """The built-ins a bare probe's ``system/init`` lists (pure)."""
    names = frozenset(n for n in event.get("slash_commands") or () if isinstance(n, str))
    skills = frozenset(n for n in event.get("skills") or () if isinstance(n, str)) & names
    reported = event.get("claude_code_version")
    return Builtins(
        version or (reported if isinstance(reported, str) else None), names, skills, "probe"
    )


def encode_cache(entries: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The cache file's bytes for ``{version: entry}`` (pure)."""
    return orjson.dumps(
        {"format": CACHE_FORMAT, "versions": dict(entries)},
        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
    )


def cache_entry(builtins: Builtins, claude_bin: str, now: datetime) -> dict[str, Any]:
    return {
        "names": sorted(builtins.names),
        "skills": sorted(builtins.skills),
        "claude_bin": claude_bin,
        "observed_at": now.isoformat(),
    }


def decode_cache(data: bytes) -> dict[str, dict[str, Any]]:
    """``{version: entry}`` from the cache file's bytes; ValueError when it is not one (pure)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(parsed, dict) or parsed.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a format {CACHE_FORMAT} cache")
    versions = parsed.get("versions")
    if not isinstance(versions, dict):
        raise ValueError("no 'versions' object")
    for version, entry in versions.items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), list) and all(isinstance(n, str) for n in entry[key])
            for key in ("names", "skills")
        ):
            raise ValueError(f"entry {version!r} has no 'names' and 'skills' lists")
    return versions


def entry_builtins(version: str, entry: Mapping[str, Any]) -> Builtins:
    names = frozenset(entry["names"])
    return Builtins(version, names, frozenset(entry["skills"]) & names, "cache")


class BuiltinsCache:
    """The cache file in the state directory (see the module doc)."""

    def __init__(self, path: Path, warn: Warn) -> None:
        self.path = path
        self._warn = warn
        self._entries: dict[str, dict[str, Any]] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """The entries, read once (a bad file warns once and counts as empty)."""
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            return decode_cache(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self._warn(f"slash command cache {self.path}: {reason}: ignored")
            return {}

    def get(self, version: str) -> Builtins | None:
        entry = self.load().get(version)
        return entry_builtins(version, entry) if entry is not None else None

    def put(self, builtins: Builtins, claude_bin: str) -> None:
        assert builtins.version is not None
        entries = dict(self._read() if self._entries is None else self._entries)
        entries[builtins.version] = cache_entry(builtins, claude_bin, datetime.now(UTC))
        try:
            write_private(self.path, encode_cache(entries))
        except OSError as exc:
            self._warn(f"slash command cache {self.path}: cannot write: {exc.strerror or exc}")


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 (a directory it needs is 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp made it 0600
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_version(claude_bin: str, timeout: float = VERSION_TIMEOUT_S) -> str | None:
    """The version ``claude --version`` prints, or None when it prints none.

    Raises :class:`ClaudeNotFoundError` when the binary cannot be started.
    """
    try:
        proc = subprocess.Popen(
            [claude_bin, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=probe_env(),
            start_new_session=True,
        )
    except OSError as exc:
        raise ClaudeNotFoundError(f"cannot start {claude_bin!r}: {exc}") from exc
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    if proc.returncode != 0:
        return None
    return parse_version(out.decode(errors="replace"))


def probe_builtins(claude_bin: str, timeout: float = PROBE_TIMEOUT_S) -> Builtins:
    """Ask ``claude_bin`` in an empty git root with an empty HOME (no token is spent)."""
    with tempfile.TemporaryDirectory(prefix="coordinator-builtins-") as tmp:
        workspace, home = Path(tmp) / "workspace", Path(tmp) / "home"
        (workspace / ".git").mkdir(parents=True)  # the CLI reads no directory above it
        home.mkdir()
        event = _run_sync(probe_init(claude_bin, workspace, home, timeout))
    return builtins_from_init(event)


def builtins_for(
    claude_bin: str,
    state_dir: Path,
    *,
    warn: Warn,
    timeout: float = PROBE_TIMEOUT_S,
) -> Asked:
    """The built-ins of ``claude_bin``: recorded when it is the pinned version, else from
    the cache, else asked (and cached). Raises ClaudeNotFoundError or ProbeError."""
    version = read_version(claude_bin)
    if version is not None and version == RECORDED.version:
        return Asked(RECORDED, claude_bin)
    cache = BuiltinsCache(state_dir / CACHE_NAME, warn)
    if version is not None and (hit := cache.get(version)) is not None:
        return Asked(hit, claude_bin, cache.path)
    found = probe_builtins(claude_bin, timeout)
    if version is not None:
        found = replace(found, version=version)
    if not found.names:
        raise ProbeError(f"{claude_bin}: its system/init lists no slash commands")
    if found.version is not None:
        cache.put(found, claude_bin)
    return Asked(found, claude_bin, cache.path)


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from sync code, also when called inside an event loop
    (the run's preflight is): then on a loop of its own in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="builtins-probe") as pool:
        return pool.submit(asyncio.run, coro).result()
