"""A small, forgiving reader for the YAML frontmatter of command and skill files.

Command frontmatter is flat: ``key: value`` lines, quoted strings, ``[a, b]`` flow lists,
``- item`` block lists and ``|`` / ``>`` block scalars. That subset is read here without
a YAML dependency. Like the pinned CLI, a broken line does not discard the whole block:
every key that can be read is kept and the bad line is reported in ``problems``.

Fence rules observed on CLI 2.1.329: the opening ``---`` must be the very first line (a
UTF-8 BOM is ignored, CRLF is accepted, trailing blanks on a fence are allowed); without a
closing ``---`` line the whole file is body. Keys are case-sensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FENCE = re.compile(r"---[ \t]*")
_KEY = re.compile(r"(?P<key>[A-Za-z_][\w.-]*)[ \t]*:(?:[ \t]+(?P<value>.*)|[ \t]*)$")
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?")

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Frontmatter:
    """``fields`` from the frontmatter block, the ``body`` after it, and what went wrong.

    ``body_line`` is the 1-based file line on which ``body`` starts, so positions found
    in the body can be reported as file line numbers.
    """

    fields: dict[str, object]
    body: str
    body_line: int
    present: bool
    problems: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)  # each key's value text as written


def split_frontmatter(text: str) -> Frontmatter:
    """Split ``text`` (a whole command file) into frontmatter fields and body."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or not _FENCE.fullmatch(lines[0]):
        return Frontmatter({}, text, 1, present=False)
    for end in range(1, len(lines)):
        if _FENCE.fullmatch(lines[end]):
            block = lines[1:end]
            fields, problems = parse_block(block, first_line=2)
            body = "\n".join(lines[end + 1 :])
            return Frontmatter(fields, body, end + 2, True, problems, raw_values(block))
    unclosed = "'---' never closed: the whole file is body"
    return Frontmatter({}, text, 1, present=False, problems=[unclosed])


def raw_values(lines: list[str]) -> dict[str, str]:
    """Each top-level key's value text, comment removed, quotes kept (e.g. for hints)."""
    raw: dict[str, str] = {}
    for line in lines:
        if match := _KEY.match(line):
            raw[match["key"]] = _strip_comment(match["value"] or "")
    return raw


def parse_block(lines: list[str], first_line: int = 1) -> tuple[dict[str, object], list[str]]:
    """Parse frontmatter lines (no fences) into a dict; return it and the problems met."""
    fields: dict[str, object] = {}
    problems: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        lineno = first_line + i
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            problems.append(f"line {lineno}: unexpected indentation: {line.strip()!r}")
            continue
        match = _KEY.match(line)
        if match is None:
            problems.append(f"line {lineno}: not 'key: value': {line.strip()!r}")
            continue
        key, raw = match["key"], (match["value"] or "")
        if key in fields:
            problems.append(f"line {lineno}: duplicate key {key!r} (last one kept)")
        nested, i = _indented(lines, i)
        value_text = _strip_comment(raw)
        if value_text in ("|", ">", "|-", ">-", "|+", ">+"):
            fields[key] = _block_scalar(nested, value_text)
        elif not value_text and nested:
            fields[key] = _block_list(nested, lineno, problems)
        else:
            if nested:
                problems.append(f"line {lineno}: indented lines after {key!r} ignored")
            fields[key] = _value(value_text, lineno, problems)
    return fields, problems


def _indented(lines: list[str], start: int) -> tuple[list[str], int]:
    """The run of indented or blank lines from ``start`` (a nested block) and where it ends."""
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1  # trailing blank lines belong to nothing
    return lines[start:end], end


def _block_scalar(lines: list[str], style: str) -> str:
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    texts = [x[indent:] for x in lines]
    if style.startswith(">"):
        text = " ".join(t for t in texts if t) if texts else ""
    else:
        text = "\n".join(texts)
    keep_final_newline = bool(text) and not style.endswith("-")
    return text + "\n" if keep_final_newline else text


def _block_list(lines: list[str], lineno: int, problems: list[str]) -> list[Scalar]:
    items: list[Scalar] = []
    for offset, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped == "-" or stripped.startswith("- "):
            items.append(_scalar(_strip_comment(stripped[1:].strip()), lineno + offset, problems))
        else:
            problems.append(f"line {lineno + offset}: expected '- item': {stripped!r}")
    return items


def _value(text: str, lineno: int, problems: list[str]) -> object:
    if text.startswith("["):
        if not text.endswith("]"):
            problems.append(f"line {lineno}: unclosed '[': kept as text")
            return text
        inner = text[1:-1].strip()
        if not inner:
            return []
        if "[" in inner or "]" in inner:  # "[a] [b]": a hint written bare, not a list
            return text
        return [_scalar(part.strip(), lineno, problems) for part in _split_flow(inner)]
    return _scalar(text, lineno, problems)


def _split_flow(inner: str) -> list[str]:
    """Split a flow list body on commas that are outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    for char in inner:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _scalar(text: str, lineno: int, problems: list[str]) -> Scalar:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else _unescape_double(inner)
    if text and text[0] in "'\"":
        problems.append(f"line {lineno}: unbalanced quote: kept as text")
        return text
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("", "~", "null"):
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _unescape_double(inner: str) -> str:
    escapes = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "/": "/"}
    out, i = [], 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] in escapes:
            out.append(escapes[inner[i + 1]])
            i += 2
        else:
            out.append(inner[i])
            i += 1
    return "".join(out)


def _strip_comment(text: str) -> str:
    """Drop a trailing `` # comment`` that is outside quotes."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"" and (i == 0 or text[i - 1] in " \t[,"):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.strip()
