"""The pidfile of a detached run: what it says and how that is read back. Pure.

The first line is the pid alone (so ``kill -TERM $(head -1 FILE)`` works); the rest are
``key: value`` lines a person can read. It never holds a secret: no argv, no env."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from coordinator.errors import CoordinatorError

PIDFILE_SUFFIX = ".pid"
CONSOLE_SUFFIX = ".out"


@dataclass(frozen=True, slots=True)
class PidInfo:
    pid: int
    orchestration_id: str
    host: str
    started: str  # ISO 8601, when the detached coordinator started
    state: str  # "starting", "waiting until <ISO time>", "running"
    log_file: str = ""
    results: str = ""

    def with_state(self, state: str) -> PidInfo:
        return replace(self, state=state)


_KEYS = (
    ("orchestration_id", "orchestration"),
    ("host", "host"),
    ("started", "started"),
    ("state", "state"),
    ("log_file", "log"),
    ("results", "results"),
)


def render(info: PidInfo) -> str:
    lines = [str(info.pid)]
    for attr, key in _KEYS:
        lines.append(f"{key}: {getattr(info, attr)}")
    return "\n".join(lines) + "\n"


def parse(text: str, source: str) -> PidInfo:
    """A pidfile's text; CoordinatorError naming ``source`` if it is not one of ours."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise CoordinatorError(f"{source}: not a coordinator pidfile (no pid on its first line)")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    values = {attr: fields.get(key, "") for attr, key in _KEYS}
    return PidInfo(pid=int(lines[0]), **values)


def waiting_state(start_at_iso: str) -> str:
    return f"waiting until {start_at_iso}"


def runs_dir(state_dir: Path) -> Path:
    """Where detached runs keep their pidfile and console output."""
    return state_dir / "runs"


def pidfile_path(state_dir: Path, orchestration_id: str) -> Path:
    return runs_dir(state_dir) / f"{orchestration_id}{PIDFILE_SUFFIX}"


def console_path(state_dir: Path, orchestration_id: str) -> Path:
    """What a terminal would have shown (the plain report lines, warnings, the summary)."""
    return runs_dir(state_dir) / f"{orchestration_id}{CONSOLE_SUFFIX}"
