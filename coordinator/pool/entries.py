"""One entry of the pool: something an instance did (from its stream) or said it did (its
own ``pool`` block), in the terms of seed 004 (INSTANCE, ACTION, TOPIC, SUMMARY, AFFECTS,
BLOCKS). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    FILE = "file"  # wrote or edited a file (Write, Edit, MultiEdit, NotebookEdit)
    COMMAND = "command"  # ran a Bash command
    TEST = "test"  # ran tests (a recognised test command), with their outcome
    MILESTONE = "milestone"  # reached 30%, 50%, ...
    SUMMARY = "summary"  # the text of a turn's result (clipped)
    DECLARED = "declared"  # a ```pool block the instance wrote itself
    NOTE = "note"  # a pool block that could not be read: said, never fatal
    CONFLICT = "conflict"  # a path written by two instances (or a write refused)


# The ACTIONs of a declared entry (seed 004).
DECLARED_ACTIONS = ("completed", "researched", "blocked")
SUMMARY_CHARS = 500  # a summary is clipped to this many characters


@dataclass(frozen=True, slots=True)
class PoolEntry:
    orchestration_id: str
    instance: str
    kind: Kind
    action: str  # wrote, edited, ran, passed, failed, reached, completed, researched, ...
    summary: str
    at_unix: float
    topic: str | None = None
    affects: tuple[str, ...] = field(default_factory=tuple)  # paths, as the instance gave them
    blocks: tuple[str, ...] = field(default_factory=tuple)  # instances (or topics) it blocks
    seq: int = 0  # order within its instance, in this process

    def line(self) -> str:
        """One line for people and digests: ``alpha wrote src/app.py``."""
        head = f"{self.instance} {self.action}"
        if self.topic:
            head += f" [{self.topic}]"
        text = f"{head}: {self.summary}" if self.summary else head
        if self.affects and self.kind is not Kind.FILE:
            text += f" (affects {', '.join(self.affects)})"
        if self.blocks:
            text += f" (blocks {', '.join(self.blocks)})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "kind": self.kind.value,
            "action": self.action,
            "topic": self.topic,
            "summary": self.summary,
            "affects": list(self.affects),
            "blocks": list(self.blocks),
            "at_unix": round(self.at_unix, 3),
        }


def clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
