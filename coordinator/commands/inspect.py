"""Look inside one slash command: its fields, its placeholders, what ``/cmd args`` sends.

Substitution rules of the pinned CLI (2.1.329), observed on the request it sends:

* ``$ARGUMENTS`` -> the argument text as typed (trimmed); no word boundary is needed
  after it (``$ARGUMENTSX`` -> ``<args>X``).
* ``$ARGUMENTS[N]`` and ``$N`` -> the N-th argument, 0-based, arguments split like a
  shell (``"two three"`` is one). ``$N`` must not be followed by a word character
  (``$1x`` stays). An index out of range leaves the placeholder as written.
* ``$name`` for each name in the frontmatter ``arguments`` (a list or a space-separated
  string) -> the argument at that position.
* A backslash before a placeholder is removed and the placeholder is kept literally.
* When nothing was substituted and arguments were given, the CLI appends
  ``"\\n\\nARGUMENTS: <args>"`` to the body.
* With frontmatter, blank lines between the closing ``---`` and the text are dropped.
  A skill's text is preceded by ``"Base directory for this skill: <dir>\\n\\n"``.

Not replicated by :func:`expand`: ``!`cmd``` is run by the CLI (in ``-p`` mode too) and
replaced by its output, here it is left as written; ``@path`` stays in the text and the
CLI attaches the file's contents as a separate block, which a preview does not show.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from coordinator.commands.discovery import Shadowed, SlashCommand

PlaceholderKind = Literal["arguments", "argument-index", "positional", "named", "shell", "file"]

_SUBSTITUTION = re.compile(
    r"(?P<escape>\\?)\$(?:"
    r"ARGUMENTS\[(?P<index>\d+)\]"
    r"|(?P<all>ARGUMENTS)"
    r"|(?P<positional>\d++)(?!\w)"
    r"|(?P<named>[A-Za-z_]\w*+)(?!\[)"
    r")"
)
_SHELL = re.compile(r"(?<!\S)!`(?P<cmd>[^`\n]+)`")
_FILE_REF = re.compile(r"(?<![\w@`])@(?P<path>[\w./~-][^\s`]*)")
_KIND_HELP: dict[PlaceholderKind, str] = {
    "arguments": "all arguments as typed",
    "argument-index": "one argument, 0-based",
    "positional": "one argument, 0-based",
    "named": "argument named in frontmatter 'arguments'",
    "shell": "shell command run by the CLI; its output replaces it",
    "file": "file reference; the CLI attaches the file",
}


@dataclass(frozen=True, slots=True)
class Placeholder:
    kind: PlaceholderKind
    text: str  # as written in the file
    line: int  # 1-based line in the file
    column: int  # 1-based
    detail: str | None = None  # the index, the argument name, the shell command or the path


@dataclass(frozen=True, slots=True)
class Inspection:
    command: SlashCommand
    placeholders: list[Placeholder]
    named_arguments: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def file(self) -> Path | None:
        return self.command.path


def named_arguments(cmd: SlashCommand) -> list[str]:
    """The names declared in frontmatter ``arguments`` (list or space-separated string)."""
    declared = cmd.frontmatter.get("arguments")
    if isinstance(declared, list):
        return [str(x) for x in declared if x is not None]
    if isinstance(declared, str):
        return declared.split()
    return []


def find_placeholders(cmd: SlashCommand) -> list[Placeholder]:
    """Every placeholder in the body, in file order, with file line and column."""
    names = set(named_arguments(cmd))
    found: list[Placeholder] = []
    for offset, line in enumerate((cmd.body or "").split("\n")):
        lineno = cmd.body_line + offset
        for m in _SUBSTITUTION.finditer(line):
            placeholder = _classify(m, names, lineno)
            if placeholder is not None:
                found.append(placeholder)
        for m in _SHELL.finditer(line):
            found.append(Placeholder("shell", m[0], lineno, m.start() + 1, m["cmd"]))
        for m in _FILE_REF.finditer(line):
            path = m["path"].rstrip(".,;:!?)]}'\"")
            found.append(Placeholder("file", "@" + path, lineno, m.start() + 1, path))
    return sorted(found, key=lambda p: (p.line, p.column))


def _classify(m: re.Match[str], names: set[str], lineno: int) -> Placeholder | None:
    if m["escape"]:
        return None
    column = m.start() + 1
    if m["index"] is not None:
        return Placeholder("argument-index", m[0], lineno, column, str(int(m["index"])))
    if m["all"] is not None:
        return Placeholder("arguments", m[0], lineno, column)
    if m["positional"] is not None:
        return Placeholder("positional", m[0], lineno, column, str(int(m["positional"])))
    if m["named"] in names:
        return Placeholder("named", m[0], lineno, column, m["named"])
    return None


def inspect(cmd: SlashCommand, *, shadowed: Iterable[Shadowed] = ()) -> Inspection:
    """Fields, placeholders and notes for ``cmd``; ``shadowed`` from ``Discovery.shadowed``."""
    placeholders = find_placeholders(cmd)
    notes: list[str] = []
    if cmd.body is None:
        notes.append("built into the CLI: no file to inspect")
    elif not any(
        p.kind in ("arguments", "argument-index", "positional", "named") for p in placeholders
    ):
        notes.append("no argument placeholder: arguments are appended as 'ARGUMENTS: <args>'")
    if not cmd.user_invocable:
        notes.append("user-invocable is false: the CLI does not offer it as a slash command")
    for item in shadowed:
        if item.by is cmd:
            where = item.command.path or item.command.source
            notes.append(f"shadows {item.command.source} definition {where}")
        elif item.command is cmd:
            notes.append(f"shadowed by {item.by.source} definition {item.by.path or item.by.name}")
    return Inspection(cmd, placeholders, named_arguments(cmd), notes)


def split_arguments(arguments: str) -> list[str]:
    """Arguments split like a shell; unbalanced quotes fall back to whitespace splitting."""
    try:
        return shlex.split(arguments)
    except ValueError:
        return arguments.split()


def expand(cmd: SlashCommand, arguments: str) -> str:
    """The text the CLI would send for ``/<cmd.name> <arguments>`` (see module notes).

    A built-in has no text to expand: the prompt itself is returned.
    """
    arguments = arguments.strip()
    if cmd.body is None:
        return f"/{cmd.name} {arguments}".rstrip()
    values = split_arguments(arguments)
    names = named_arguments(cmd)
    substituted = False

    def replace(m: re.Match[str]) -> str:
        nonlocal substituted
        if m["escape"]:
            return m[0][1:]
        if m["all"] is not None:
            substituted = True
            return arguments
        if m["named"] is not None:
            if m["named"] not in names:
                return m[0]
            position = names.index(m["named"])
        else:
            position = int(m["index"] if m["index"] is not None else m["positional"])
        if position >= len(values):
            return m[0]
        substituted = True
        return values[position]

    body = cmd.body.lstrip("\n") if cmd.frontmatter or cmd.body_line > 1 else cmd.body
    text = _SUBSTITUTION.sub(replace, body)
    if not substituted and arguments:
        text += f"\n\nARGUMENTS: {arguments}"
    if cmd.source in ("project-skill", "user-skill") and cmd.path is not None:
        text = f"Base directory for this skill: {cmd.path.parent}\n\n{text}"
    return text


# ---------------------------------------------------------------- renderers


def render_list_text(commands: Iterable[SlashCommand]) -> str:
    """One line per command: name, source, argument hint, description; aligned columns."""
    rows = [
        (c.slash, c.source, c.argument_hint or "", _one_line(c.description or "")) for c in commands
    ]
    if not rows:
        return "no slash commands found\n"
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{name:<{widths[0]}}  {source:<{widths[1]}}  {hint:<{widths[2]}}  {desc}".rstrip()
        for name, source, hint, desc in rows
    ]
    return "\n".join(lines) + "\n"


def command_to_dict(cmd: SlashCommand, *, body: bool = False) -> dict[str, object]:
    data: dict[str, object] = {
        "name": cmd.name,
        "slash": cmd.slash,
        "source": cmd.source,
        "path": str(cmd.path) if cmd.path is not None else None,
        "description": cmd.description,
        "argument_hint": cmd.argument_hint,
        "user_invocable": cmd.user_invocable,
        "frontmatter": cmd.frontmatter,
    }
    if body:
        data["body"] = cmd.body
        data["body_line"] = cmd.body_line
    return data


def render_list_json(commands: Iterable[SlashCommand]) -> str:
    return json.dumps([command_to_dict(c) for c in commands], indent=2, default=str)


def render_inspection_text(insp: Inspection) -> str:
    cmd = insp.command
    out = [f"{cmd.slash}  ({cmd.source})"]
    out.append(f"  file:          {cmd.path or '(built into the CLI)'}")
    if cmd.path is not None and cmd.path.is_symlink():
        out.append(f"  resolves to:   {cmd.path.resolve()}")
    out.append(f"  description:   {cmd.description or '-'}")
    out.append(f"  argument hint: {cmd.argument_hint or '-'}")
    if insp.named_arguments:
        out.append(f"  named args:    {', '.join('$' + n for n in insp.named_arguments)}")
    if cmd.frontmatter:
        out.append("  frontmatter:")
        width = max(len(k) for k in cmd.frontmatter)
        out += [f"    {k:<{width}}  {_show(v)}" for k, v in cmd.frontmatter.items()]
    if insp.placeholders:
        out.append("  placeholders:")
        width = max(len(p.text) for p in insp.placeholders)
        out += [
            f"    line {p.line:>3} col {p.column:>3}  {p.text:<{width}}  {_KIND_HELP[p.kind]}"
            for p in insp.placeholders
        ]
    out += [f"  note: {n}" for n in insp.notes]
    if cmd.body is not None:
        out.append(f"  body (file line {cmd.body_line}):")
        marked = {p.line for p in insp.placeholders}
        for offset, line in enumerate(cmd.body.rstrip("\n").split("\n")):
            lineno = cmd.body_line + offset
            out.append(f"  {'>' if lineno in marked else ' '}{lineno:>4} | {line}".rstrip())
    return "\n".join(out) + "\n"


def render_inspection_json(insp: Inspection) -> str:
    data = command_to_dict(insp.command, body=True)
    data["named_arguments"] = insp.named_arguments
    data["placeholders"] = [
        {"kind": p.kind, "text": p.text, "line": p.line, "column": p.column, "detail": p.detail}
        for p in insp.placeholders
    ]
    data["notes"] = insp.notes
    return json.dumps(data, indent=2, default=str)


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
