"""Find the claude executable: --claude-bin, COORDINATOR_CLAUDE_BIN, project-local, PATH."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import ClaudeNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_LOCAL = PROJECT_ROOT / "node_modules" / ".bin" / "claude"


@dataclass(frozen=True, slots=True)
class ClaudeBinary:
    path: str
    source: str  # "--claude-bin", "COORDINATOR_CLAUDE_BIN", "project", "PATH"


def find_claude(flag: str | None = None, env_value: str | None = None) -> ClaudeBinary:
    for value, source in ((flag, "--claude-bin"), (env_value, "COORDINATOR_CLAUDE_BIN")):
        if value:
            resolved = _executable(value)
            if resolved is None:
                raise ClaudeNotFoundError(f"{source}: {value!r} is not an executable file")
            return ClaudeBinary(resolved, source)
    if _executable(str(PROJECT_LOCAL)):
        return ClaudeBinary(str(PROJECT_LOCAL), "project")
    on_path = shutil.which("claude")
    if on_path:
        return ClaudeBinary(on_path, "PATH")
    raise ClaudeNotFoundError(
        "claude not found: run 'make install' (project-local pinned CLI), "
        "or pass --claude-bin / set COORDINATOR_CLAUDE_BIN"
    )


def _executable(value: str) -> str | None:
    path = Path(value).expanduser()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path.absolute())  # instances start in their workspaces, not here
    if os.sep not in value:
        return shutil.which(value)
    return None
