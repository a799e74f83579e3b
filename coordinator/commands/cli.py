"""``coordinator --list-commands`` and ``--inspect-command``: discovery, rendered."""

from __future__ import annotations

from pathlib import Path

import click

from coordinator.commands.discovery import find, scan
from coordinator.commands.inspect import (
    inspect,
    render_inspection_json,
    render_inspection_text,
    render_list_json,
    render_list_text,
)
from coordinator.errors import UsageError


def _workspace(workspace: Path) -> Path:
    path = workspace.resolve()
    if not path.is_dir():
        raise UsageError(f"--workspace {workspace}: not a directory")
    return path


def list_main(workspace: Path, json_output: bool) -> int:
    found = scan(_workspace(workspace))
    click.echo(
        render_list_json(found.commands) if json_output else render_list_text(found.commands)
    )
    for problem in found.problems:
        click.echo(f"warning: {problem.path}: {problem.message}", err=True)
    return 0


def inspect_main(name: str, workspace: Path, json_output: bool) -> int:
    found = scan(_workspace(workspace))
    cmd = find(found.commands, name, hidden=found.hidden)
    insp = inspect(cmd, shadowed=found.shadowed)
    click.echo(render_inspection_json(insp) if json_output else render_inspection_text(insp))
    return 0
