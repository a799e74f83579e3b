"""Who owns a path, and when two instances write the same one. Pure.

Ownership: the first instance that writes a path (warn: its write went through; block: the
hook asked first) owns it for the whole run, also after it ends (a retry or a resume of
that instance writes it again; another instance taking it over would be the very
conflict). A second writer makes a conflict: in ``warn`` mode its write happens and the
conflict is reported; in ``block`` mode the hook refuses it before it writes, naming the
owner."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Conflict:
    path: str  # as shown (relative to the run's workspace when inside it)
    owner: str
    writers: list[str] = field(default_factory=list)  # others whose write went through
    refused: list[str] = field(default_factory=list)  # others refused (block mode)

    def text(self) -> str:
        names = [self.owner, *self.writers]
        text = f"conflict: {self.path} written by {_and(names)}"
        if self.refused:
            text += f"; refused to {_and(self.refused)} (owned by {self.owner})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "owner": self.owner,
            "writers": [self.owner, *self.writers],
            "refused": list(self.refused),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    owner: str
    conflict: Conflict | None  # new news about a conflict (announce it), else None


class ConflictBook:
    def __init__(self) -> None:
        self.owners: dict[str, str] = {}  # absolute path -> owner
        self.conflicts: dict[str, Conflict] = {}

    def wrote(self, path: str, shown: str, instance: str) -> Conflict | None:
        """A write went through. The conflict when it is news (a new second writer)."""
        owner = self.owners.setdefault(path, instance)
        if owner == instance:
            return None
        conflict = self.conflicts.setdefault(path, Conflict(shown, owner))
        if instance in conflict.writers:
            return None
        conflict.writers.append(instance)
        return conflict

    def ask(self, path: str, shown: str, instance: str) -> Decision:
        """Block mode, before the write: the first to ask owns the path; anyone else is
        refused, and the conflict is news the first time each one is."""
        owner = self.owners.setdefault(path, instance)
        if owner == instance:
            return Decision(True, owner, None)
        conflict = self.conflicts.setdefault(path, Conflict(shown, owner))
        if instance in conflict.refused:
            return Decision(False, owner, None)
        conflict.refused.append(instance)
        return Decision(False, owner, conflict)


def denial_text(shown: str, owner: str) -> str:
    """What the refused instance reads (the hook's reason): the owner named, the way out."""
    return (
        f"{shown} is owned by instance {owner} in this coordinator run (it wrote it first); "
        f"do not write it: leave it to {owner}, or put your change in another file"
    )


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
