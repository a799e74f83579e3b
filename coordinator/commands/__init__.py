"""Slash commands: discover them as the pinned CLI does, inspect them, preview expansion.

``discover``/``scan`` read the files; ``find`` resolves a name with suggestions;
``inspect`` and ``expand`` look inside one command; ``probe_init`` asks the real CLI.
"""

from coordinator.commands.discovery import (
    Discovery,
    Problem,
    Shadowed,
    SlashCommand,
    Source,
    command_name_of,
    discover,
    find,
    merge_cli_names,
    project_roots,
    scan,
    user_config_dir,
)
from coordinator.commands.inspect import (
    Inspection,
    Placeholder,
    expand,
    inspect,
    render_inspection_json,
    render_inspection_text,
    render_list_json,
    render_list_text,
)
from coordinator.commands.probe import ProbeError, probe_init, probe_init_sync

__all__ = [
    "Discovery",
    "Inspection",
    "Placeholder",
    "ProbeError",
    "Problem",
    "Shadowed",
    "SlashCommand",
    "Source",
    "command_name_of",
    "discover",
    "expand",
    "find",
    "inspect",
    "merge_cli_names",
    "probe_init",
    "probe_init_sync",
    "project_roots",
    "render_inspection_json",
    "render_inspection_text",
    "render_list_json",
    "render_list_text",
    "scan",
    "user_config_dir",
]
