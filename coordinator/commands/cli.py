"""``coordinator --list-commands`` and ``--inspect-command``: discovery, rendered.

Built-ins are those of the claude that would run (``--claude-bin``, COORDINATOR_CLAUDE_BIN,
the project-local pin, PATH): asked of that CLI when it is not the pinned version (see
:mod:`coordinator.commands.asked`). With no claude at all, the recorded list is used.
"""

from __future__ import annotations

from pathlib import Path

import click

from coordinator.claude_bin import find_claude
from coordinator.commands.asked import builtins_for
from coordinator.commands.builtins import RECORDED, Builtins
from coordinator.commands.discovery import find, scan
from coordinator.commands.inspect import (
    inspect,
    render_inspection_json,
    render_inspection_text,
    render_list_json,
    render_list_text,
)
from coordinator.errors import ClaudeNotFoundError, UsageError
from coordinator.settings import load_settings
from coordinator.statedir import default_state_dir


def _workspace(workspace: Path) -> Path:
    path = workspace.resolve()
    if not path.is_dir():
        raise UsageError(f"--workspace {workspace}: not a directory")
    return path


def _note(text: str) -> None:
    click.echo(f"note: {text}", err=True)


def builtins_of(claude_bin: str | None) -> Builtins:
    """The built-ins of the claude that would run; a flag that names no claude is an error."""
    settings = load_settings()
    try:
        claude = find_claude(claude_bin, settings.claude_bin)
    except ClaudeNotFoundError:
        if claude_bin or settings.claude_bin:
            raise
        _note(f"no claude found: built-ins as recorded for claude {RECORDED.version}")
        return RECORDED
    asked = builtins_for(claude.path, settings.state_dir or default_state_dir(), warn=_note)
    found = asked.builtins
    if found.source == "probe":
        _note(
            f"asked {claude.path} ({found.version}) for its built-ins; cached in {asked.cache_path}"
        )
    return found


def list_main(workspace: Path, json_output: bool, claude_bin: str | None = None) -> int:
    ws = _workspace(workspace)
    found = scan(ws, builtins=builtins_of(claude_bin))
    click.echo(
        render_list_json(found.commands) if json_output else render_list_text(found.commands)
    )
    for problem in found.problems:
        click.echo(f"warning: {problem.path}: {problem.message}", err=True)
    return 0


def inspect_main(
    name: str, workspace: Path, json_output: bool, claude_bin: str | None = None
) -> int:
    ws = _workspace(workspace)
    found = scan(ws, builtins=builtins_of(claude_bin))
    cmd = find(found.commands, name, hidden=found.hidden)
    insp = inspect(cmd, shadowed=found.shadowed)
    click.echo(render_inspection_json(insp) if json_output else render_inspection_text(insp))
    return 0
