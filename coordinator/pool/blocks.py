"""The ``pool`` blocks an instance writes in its text, read strictly. Pure.

The format (one ``KEY: value`` a line, keys in any order, each at most once)::

    ```pool
    INSTANCE: frontend
    ACTION: completed
    TOPIC: blog redesign
    SUMMARY: new layout for /blog, old CSS removed
    AFFECTS: src/blog.css, src/blog.html
    BLOCKS: none
    ```

ACTION (completed, researched or blocked), TOPIC and SUMMARY are required; INSTANCE, when
given, must be the instance's own name; AFFECTS and BLOCKS are comma-separated (``none`` or
empty: nothing). Anything else (an unknown key, a repeated key, a line without a colon, a
missing field, an unclosed block) makes the block a note saying why, never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinator.pool.entries import DECLARED_ACTIONS

FENCE = re.compile(r"^[ \t]*```pool[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
OPENING = re.compile(r"^[ \t]*```pool[ \t]*$", re.MULTILINE)
KEYS = ("INSTANCE", "ACTION", "TOPIC", "SUMMARY", "AFFECTS", "BLOCKS")
REQUIRED = ("ACTION", "TOPIC", "SUMMARY")
MAX_BLOCK_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Declared:
    action: str
    topic: str
    summary: str
    affects: tuple[str, ...]
    blocks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Malformed:
    why: str


def read_blocks(text: str, instance: str) -> list[Declared | Malformed]:
    """Every ``pool`` block in ``text``, in order."""
    if "```pool" not in text:
        return []
    out: list[Declared | Malformed] = []
    closed = 0
    for match in FENCE.finditer(text):
        closed += 1
        out.append(parse_block(match.group(1), instance))
    if len(OPENING.findall(text)) > closed:
        out.append(Malformed("a ```pool block is not closed"))
    return out


def parse_block(body: str, instance: str) -> Declared | Malformed:
    if len(body) > MAX_BLOCK_CHARS:
        return Malformed(f"the block is longer than {MAX_BLOCK_CHARS} characters")
    fields: dict[str, str] = {}
    for n, raw in enumerate(body.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, colon, value = line.partition(":")
        key = key.strip().upper()
        if not colon:
            return Malformed(f"line {n} is not KEY: value")
        if key not in KEYS:
            return Malformed(f"unknown key {key!r} (known: {', '.join(KEYS)})")
        if key in fields:
            return Malformed(f"{key} given twice")
        fields[key] = value.strip()
    missing = [k for k in REQUIRED if not fields.get(k)]
    if missing:
        return Malformed(f"missing {', '.join(missing)}")
    action = fields["ACTION"].lower()
    if action not in DECLARED_ACTIONS:
        return Malformed(f"ACTION {fields['ACTION']!r} is not one of {', '.join(DECLARED_ACTIONS)}")
    named = fields.get("INSTANCE")
    if named and named != instance:
        return Malformed(f"INSTANCE {named!r} is not this instance ({instance})")
    return Declared(
        action=action,
        topic=fields["TOPIC"],
        summary=fields["SUMMARY"],
        affects=_items(fields.get("AFFECTS", "")),
        blocks=_items(fields.get("BLOCKS", "")),
    )


def _items(value: str) -> tuple[str, ...]:
    if value.strip().lower() in ("", "none", "-"):
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())
