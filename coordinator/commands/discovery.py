"""Find the slash commands the pinned ``claude`` CLI offers in a workspace, from the files.

Rules, each verified against the ``slash_commands`` of CLI 2.1.329's ``system/init`` event
(see ``tests/commands/test_against_cli.py``):

* Project roots are the workspace and its ancestors, nearest first, up to and including
  the first directory holding a ``.git`` entry (directory or file, valid or not), and never
  reaching HOME (whose ``.claude`` is the user level). Outside a repository: up to ``/``.
* Commands: ``<root>/.claude/commands/**/*.md`` (suffix case-sensitive; hidden files and
  directories included; symlinked files and directories followed). The name is the
  relative path without ``.md``, directories joined by ``:``
  (``testing/flakyfinder.md`` -> ``testing:flakyfinder``). A ``name:`` key is ignored.
* Skills: ``<root>/.claude/skills/<dir>/SKILL.md`` exactly one level down (``skill.md``
  is not read; hidden and symlinked directories are); the name is the directory name,
  not the frontmatter ``name:``.
* Not read here: plugin commands, managed (policy) directories, ``--add-dir`` trees.
  :func:`merge_cli_names` adds what a probe reports beyond the files.
* User level: the same two layouts in ``$CLAUDE_CONFIG_DIR`` or else ``~/.claude``.
* One file reached by several paths (symlinks) is offered once: the first in the order
  user skills, project skills (nearest root first), project commands (nearest first),
  user commands, and within a directory tree the first by relative path.
* Same name from several places: user skill > project skill (nearest first) > user
  command > project command (nearest first) > built-in or bundled. So a user command
  shadows a project command of the same name, and any skill shadows any command.
* ``user-invocable`` other than true/yes/on/1 (any case; empty and null count as
  false) removes the winning definition from the list, and it still hides whatever it
  shadowed, built-ins included.
* Files that are empty, not UTF-8, or have broken frontmatter are still offered.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from coordinator.commands.builtins import RECORDED, Builtins
from coordinator.commands.frontmatter import split_frontmatter
from coordinator.errors import UsageError

Source = Literal["project", "user", "project-skill", "user-skill", "plugin", "builtin"]

_TRUTHY = frozenset({"true", "yes", "on", "1"})
_DESCRIPTION_LIMIT = 120
_COMMAND_WORD = re.compile(r"/(?P<name>[^\s/][^\s]*)")


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """One command the CLI offers as ``/name``."""

    name: str  # without the leading slash, e.g. "testing:flakyfinder"
    source: Source
    path: Path | None  # the file as found (may be a symlink); None for built-ins
    description: str | None  # frontmatter description, else the first body line
    argument_hint: str | None
    frontmatter: dict[str, object] = field(default_factory=dict)
    body: str | None = None  # text after the frontmatter; None for built-ins
    body_line: int = 1  # file line on which ``body`` starts

    @property
    def slash(self) -> str:
        return f"/{self.name}"

    @property
    def user_invocable(self) -> bool:
        """False when frontmatter ``user-invocable`` is present and not truthy."""
        if "user-invocable" not in self.frontmatter:
            return True
        value = self.frontmatter["user-invocable"]
        if isinstance(value, bool):
            return value
        return value is not None and str(value).strip().lower() in _TRUTHY


@dataclass(frozen=True, slots=True)
class Problem:
    """A file that was skipped or read only in part; never fatal."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Shadowed:
    """``command`` is not offered because ``by`` wins its name (or is the same file)."""

    command: SlashCommand
    by: SlashCommand


@dataclass(frozen=True, slots=True)
class Discovery:
    """Everything a scan found. ``commands`` is what the CLI offers, sorted by name."""

    commands: list[SlashCommand]
    hidden: list[SlashCommand]  # winners of their name, but ``user-invocable: false``
    shadowed: list[Shadowed]
    problems: list[Problem]

    def names(self) -> set[str]:
        return {c.name for c in self.commands}


def user_config_dir(
    home: Path | None = None,
    config_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The user-level ``.claude`` directory the CLI reads.

    ``config_dir`` wins; then ``home/.claude`` when ``home`` is given (a probe with a
    given HOME drops ``CLAUDE_CONFIG_DIR``); then ``$CLAUDE_CONFIG_DIR``; then ``~/.claude``.
    """
    if config_dir is not None:
        return config_dir
    if home is not None:
        return home / ".claude"
    env = os.environ if environ is None else environ
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]).expanduser()
    return Path.home() / ".claude"


def project_roots(workspace: Path, home: Path | None = None) -> list[Path]:
    """The directories whose ``.claude`` the CLI reads as project level, nearest first."""
    home_dir = _resolved(home if home is not None else Path.home())
    roots: list[Path] = []
    start = _resolved(workspace)
    for directory in (start, *start.parents):
        if directory == home_dir:
            break
        roots.append(directory)
        if os.path.lexists(directory / ".git"):
            break
    return roots


def scan(
    workspace: Path,
    home: Path | None = None,
    *,
    config_dir: Path | None = None,
    builtins: Builtins = RECORDED,
) -> Discovery:
    """Read every command and skill file for ``workspace`` and resolve names as the CLI does.

    ``builtins`` are those of the claude that will run (see :mod:`coordinator.commands.asked`);
    the default is the list recorded for the pinned CLI."""
    problems: list[Problem] = []
    user_dir = user_config_dir(home, config_dir)
    roots = project_roots(workspace, home)
    user_skills = list(_skills(user_dir / "skills", "user-skill", problems))
    project_skills = [
        c for r in roots for c in _skills(_dot(r, "skills"), "project-skill", problems)
    ]
    project_cmds = [c for r in roots for c in _commands(_dot(r, "commands"), "project", problems)]
    user_cmds = list(_commands(user_dir / "commands", "user", problems))

    shadowed: list[Shadowed] = []
    unique = _one_per_file([*user_skills, *project_skills, *project_cmds, *user_cmds], shadowed)
    precedence = {"user-skill": 0, "project-skill": 1, "user": 2, "project": 3}
    ordered = sorted(unique, key=lambda c: precedence[c.source])  # stable: nearest first
    ordered += [_builtin(name, builtins) for name in sorted(builtins.names)]

    winners: dict[str, SlashCommand] = {}
    for command in ordered:
        if (winner := winners.get(command.name)) is None:
            winners[command.name] = command
        else:
            shadowed.append(Shadowed(command, winner))
    visible = sorted((c for c in winners.values() if c.user_invocable), key=lambda c: c.name)
    hidden = sorted((c for c in winners.values() if not c.user_invocable), key=lambda c: c.name)
    return Discovery(visible, hidden, shadowed, problems)


def discover(
    workspace: Path,
    home: Path | None = None,
    *,
    config_dir: Path | None = None,
    builtins: Builtins = RECORDED,
) -> list[SlashCommand]:
    """The commands the CLI offers in ``workspace``, sorted by name (see :func:`scan`)."""
    return scan(workspace, home, config_dir=config_dir, builtins=builtins).commands


def merge_cli_names(commands: Iterable[SlashCommand], names: Iterable[str]) -> list[SlashCommand]:
    """Add the names a probe's ``slash_commands`` lists that the files do not explain.

    Static discovery does not read plugins (or a newer CLI's new built-ins); with a probe
    at hand, validation can accept those names too. Added entries have no path and come
    as source "plugin" when the name has a ``plugin:command`` shape, else "builtin".
    """
    merged = {c.name: c for c in commands}
    for name in names:
        if name not in merged:
            source: Source = "plugin" if ":" in name else "builtin"
            merged[name] = SlashCommand(name, source, None, "reported by the CLI", None, {}, None)
    return sorted(merged.values(), key=lambda c: c.name)


def find(
    commands: Iterable[SlashCommand],
    name: str,
    *,
    hidden: Iterable[SlashCommand] = (),
) -> SlashCommand:
    """The command called ``name`` (with or without the slash), or a UsageError.

    The error suggests close names, and says so when the name exists but is hidden by
    ``user-invocable: false`` (pass ``Discovery.hidden``).
    """
    wanted = name.removeprefix("/")
    by_name = {c.name: c for c in commands}
    if wanted in by_name:
        return by_name[wanted]
    for command in hidden:
        if command.name == wanted:
            raise UsageError(
                f"slash command '/{wanted}' is not user-invocable "
                f"('user-invocable: false' in {command.path})",
                name=wanted,
            )
    close = _close_names(wanted, by_name)
    hint = f" (did you mean {', '.join('/' + c for c in close)}?)" if close else ""
    raise UsageError(f"unknown slash command '/{wanted}'{hint}", name=wanted, suggestions=close)


def command_name_of(prompt: str) -> str | None:
    """The slash command a prompt starts with: ``"/maketests backend"`` -> ``"maketests"``.

    Leading whitespace is ignored, as the CLI does; ``"/"`` alone, ``"//x"`` and a path
    such as ``"/usr/bin/env"`` are not commands.
    """
    match = _COMMAND_WORD.match(prompt.lstrip())
    if match is None or "/" in match["name"]:
        return None
    return match["name"]


def _close_names(wanted: str, names: Iterable[str]) -> list[str]:
    """Close matches on the whole name and on its last ``:`` segment."""
    pool = list(names)
    found = difflib.get_close_matches(wanted, pool, n=3, cutoff=0.6)
    tails: dict[str, list[str]] = {}
    for name in pool:
        tails.setdefault(name.rsplit(":", 1)[-1], []).append(name)
    for tail in difflib.get_close_matches(wanted.rsplit(":", 1)[-1], list(tails), n=3, cutoff=0.75):
        found.extend(n for n in tails[tail] if n not in found)
    return found[:3]


def _dot(root: Path, kind: str) -> Path:
    return root / ".claude" / kind


def _commands(directory: Path, source: Source, problems: list[Problem]) -> Iterator[SlashCommand]:
    """Every ``*.md`` under ``directory``, by relative path, following symlinks once."""
    files: list[tuple[str, Path]] = []
    _walk(directory, (), files, {_resolved(directory)}, problems)
    for relative, path in sorted(files):
        name = relative.removesuffix(".md").replace("/", ":")
        command = _read(path, name, source, problems)
        if command is not None:
            yield command


def _walk(
    directory: Path,
    parts: tuple[str, ...],
    out: list[tuple[str, Path]],
    seen_dirs: set[Path],
    problems: list[Problem],
) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return
    except OSError as exc:
        if parts or directory.exists():
            problems.append(Problem(directory, f"cannot list: {exc.strerror or exc}"))
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError as exc:
            problems.append(Problem(path, f"cannot stat: {exc.strerror or exc}"))
            continue
        if is_dir:
            real = _resolved(path)
            if real not in seen_dirs:  # a symlink loop or a second way into one tree
                _walk(path, (*parts, entry.name), out, seen_dirs | {real}, problems)
        elif is_file and entry.name.endswith(".md"):
            out.append(("/".join((*parts, entry.name)), path))
        elif entry.is_symlink() and not path.exists():
            problems.append(Problem(path, "broken symlink: skipped"))


def _skills(directory: Path, source: Source, problems: list[Problem]) -> Iterator[SlashCommand]:
    """Every ``<directory>/<name>/SKILL.md``, by name."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return
    except OSError as exc:
        problems.append(Problem(directory, f"cannot list: {exc.strerror or exc}"))
        return
    for entry in entries:
        skill_file = Path(entry.path) / "SKILL.md"
        if entry.is_dir() and skill_file.is_file():
            command = _read(skill_file, entry.name, source, problems)
            if command is not None:
                yield command


def _read(path: Path, name: str, source: Source, problems: list[Problem]) -> SlashCommand | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(path, f"cannot read: {exc.strerror or exc}: skipped"))
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        problems.append(Problem(path, "not valid UTF-8: undecodable bytes replaced"))
    parsed = split_frontmatter(text)
    problems.extend(Problem(path, f"frontmatter {p}") for p in parsed.problems)
    fields = parsed.fields
    return SlashCommand(
        name=name,
        source=source,
        path=path,
        description=_text(fields.get("description")) or _first_line(parsed.body),
        argument_hint=_hint(fields.get("argument-hint"), parsed.raw.get("argument-hint")),
        frontmatter=fields,
        body=parsed.body,
        body_line=parsed.body_line,
    )


def _one_per_file(candidates: list[SlashCommand], shadowed: list[Shadowed]) -> list[SlashCommand]:
    """Drop later candidates that are the same file as an earlier one (symlinks)."""
    first: dict[Path, SlashCommand] = {}
    kept: list[SlashCommand] = []
    for command in candidates:
        assert command.path is not None
        real = _resolved(command.path)
        if real in first:
            shadowed.append(Shadowed(command, first[real]))
        else:
            first[real] = command
            kept.append(command)
    return kept


def _builtin(name: str, builtins: Builtins) -> SlashCommand:
    return SlashCommand(name, "builtin", None, builtins.kind(name), None, {}, None)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, list | dict):
        return None
    text = str(value).strip()
    return text or None


def _hint(value: object, raw: str | None) -> str | None:
    """``argument-hint: [dir]`` is a YAML list, but it is meant as the text ``[dir]``."""
    return raw if isinstance(value, list) and raw else _text(value)


def _first_line(body: str) -> str | None:
    for line in body.splitlines():
        if line.strip():
            text = line.strip().lstrip("#").strip() or line.strip()
            if len(text) > _DESCRIPTION_LIMIT:
                return text[: _DESCRIPTION_LIMIT - 3] + "..."
            return text
    return None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # symlink loops on some Python versions
        return path.absolute()
