"""The digest a shared pool gives an instance: what the others did since it last heard,
bounded. Pure.

Bound: at most ``MAX_ENTRIES`` (40) entries and ``MAX_CHARS`` (4,000) characters, each
entry one line of at most ``LINE_CHARS`` (200). What is cut first: commands and milestones
(the least telling), oldest first; then the oldest of the rest. The digest says how many
entries it left out (``coordinator pool`` has them all)."""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.pool.entries import Kind, PoolEntry, clip

MAX_ENTRIES = 40
MAX_CHARS = 4000
LINE_CHARS = 200
CUT_FIRST = frozenset({Kind.COMMAND, Kind.MILESTONE})
HEADER = "[coordinator pool] What the other instances did since you last heard"


def build_digest(
    entries: Sequence[PoolEntry],
    *,
    max_entries: int = MAX_ENTRIES,
    max_chars: int = MAX_CHARS,
) -> str | None:
    """``entries`` (others', oldest first) as one block of text; None when there are none."""
    if not entries:
        return None
    kept = list(entries)
    cheap = [i for i, e in enumerate(kept) if e.kind in CUT_FIRST]
    drop: set[int] = set()
    for i in cheap:  # oldest first
        if len(kept) - len(drop) <= max_entries:
            break
        drop.add(i)
    kept = [e for i, e in enumerate(kept) if i not in drop]
    kept = kept[-max_entries:]
    lines = [clip(f"- {e.line()}", LINE_CHARS) for e in kept]
    while lines and len(_text(lines, len(entries) - len(lines))) > max_chars:
        lines.pop(0)
    if not lines:
        return None
    return _text(lines, len(entries) - len(lines))


def _text(lines: list[str], left_out: int) -> str:
    head = HEADER + (
        f" ({left_out} earlier entr{'y' if left_out == 1 else 'ies'} left out; "
        "`coordinator pool` has them all):"
        if left_out
        else ":"
    )
    return "\n".join([head, *lines])
