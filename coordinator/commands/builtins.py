"""Commands that ship inside the pinned CLI, as its own ``system/init`` event lists them.

For another CLI version, :mod:`coordinator.commands.asked` asks that CLI and caches the
answer; :class:`Builtins` is the answer either way.

Observed with ``coordinator.commands.probe`` on an empty workspace and an empty HOME
(also in a fresh git repository and as root with ``IS_SANDBOX=1``: the same list). The set
changes from one CLI version to the next, so it is recorded with the version it was
observed for; :func:`coordinator.commands.probe.probe_init` gives the live list, and
``tests/commands/test_against_cli.py`` fails when the pinned CLI no longer matches.
It may also differ with account state (e.g. a claude.ai login), which a probe with an
empty HOME cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OBSERVED_VERSION = "2.1.329"

# Skills bundled with the CLI (the init event's ``skills`` list): prompt-based, and
# shadowed by a project or user command/skill of the same name.
BUNDLED_SKILLS: tuple[str, ...] = (
    "batch",
    "claude-api",
    "code-review",
    "dataviz",
    "debug",
    "deep-research",
    "doctor",
    "fewer-permission-prompts",
    "loop",
    "plugin-authoring",
    "run",
    "run-skill-generator",
    "simplify",
    "update-config",
    "verify",
    "workflow-authoring",
)

# Built-in commands (local UI commands and prompt commands such as ``init``).
BUILTIN_COMMANDS: tuple[str, ...] = (
    "__remote-workflow",
    "agents",
    "auto-mode-setup",
    "autocompact",
    "clear",
    "color",
    "compact",
    "config",
    "context",
    "effort",
    "fast",
    "focus",
    "goal",
    "heapdump",
    "init",
    "insights",
    "list-agents",
    "mcp",
    "model",
    "output-style",
    "recap",
    "reload-plugins",
    "reload-skills",
    "rename",
    "security-review",
    "team-onboarding",
    "usage",
    "workflow-launch-exec",
)

BUILTIN_NAMES: frozenset[str] = frozenset(BUNDLED_SKILLS) | frozenset(BUILTIN_COMMANDS)


def builtin_kind(name: str) -> str:
    """A short description for a built-in name: "bundled skill" or "built-in command"."""
    return "bundled skill" if name in BUNDLED_SKILLS else "built-in command"


BuiltinsSource = Literal["recorded", "cache", "probe"]


@dataclass(frozen=True, slots=True)
class Builtins:
    """What one CLI version ships: every name its bare ``system/init`` lists (empty
    workspace, empty HOME), and which of them are bundled skills (its ``skills`` list).
    ``source`` says where the answer came from: recorded here, the cache, or a probe."""

    version: str | None
    names: frozenset[str]
    skills: frozenset[str]
    source: BuiltinsSource = "recorded"

    def kind(self, name: str) -> str:
        return "bundled skill" if name in self.skills else "built-in command"


RECORDED = Builtins(OBSERVED_VERSION, BUILTIN_NAMES, frozenset(BUNDLED_SKILLS))
