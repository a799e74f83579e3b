"""Pool entries from one instance's parsed stream (runner.events): files written or edited,
commands and tests run, turn results, and the ``pool`` blocks in its text. Pure: the
caller gives the clock and the redactor.

A tool call counts when its result comes back without an error (a write that a hook or a
permission refused wrote nothing)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.pool.blocks import Declared, read_blocks
from coordinator.pool.entries import Kind, PoolEntry, clip
from runner.events import Assistant, Event, Result, ToolUse, UserToolResults

WRITE_TOOLS = {"Write": "wrote", "Edit": "edited", "MultiEdit": "edited", "NotebookEdit": "edited"}
PATH_KEYS = ("file_path", "notebook_path", "path")
COMMAND_CHARS = 200
TEST_COMMAND = re.compile(
    r"(?:^|[\s;&|(/])(?:pytest|py\.test|python3? -m (?:pytest|unittest)|tox|nox|jest|vitest|"
    r"mocha|rspec|phpunit|ctest|go test|cargo test|(?:npm|yarn|pnpm)(?: run)? test|"
    r"make (?:test|check)|mvn test|gradle test)\b"
)
TEST_COUNTS = re.compile(r"\b(\d+) (passed|failed|errors?|skipped)\b")


def write_path(tool: ToolUse) -> str | None:
    """The path a write tool call names, as given."""
    if tool.name not in WRITE_TOOLS:
        return None
    for key in PATH_KEYS:
        value = tool.input.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def absolute(path: str, workspace: str) -> str:
    """The path a tool call names, made absolute against the instance's workspace."""
    return os.path.normpath(os.path.join(workspace, os.path.expanduser(path)))


def shown(path: str, root: str) -> str:
    """Relative to ``root`` when inside it, else as it is."""
    rel = os.path.relpath(path, root)
    return path if rel == ".." or rel.startswith("../") else rel


@dataclass(slots=True)
class Extracted:
    entries: list[PoolEntry] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)  # absolute paths written


class PoolExtractor:
    def __init__(
        self,
        orchestration_id: str,
        instance: str,
        workspace: str,
        *,
        root: str | None = None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.orchestration_id = orchestration_id
        self.instance = instance
        self.workspace = workspace
        self.root = root or workspace  # paths are shown relative to this
        self.redact = redact
        self._pending: dict[str, ToolUse] = {}

    def feed(self, event: Event, now: float) -> Extracted:
        out = Extracted()
        if isinstance(event, Assistant):
            for tool in event.tool_uses:
                self._pending[tool.id] = tool
            for text in event.texts:
                for block in read_blocks(text, self.instance):
                    out.entries.append(self._declared(block, now))
        elif isinstance(event, UserToolResults):
            for res in event.results:
                pending = self._pending.pop(res.tool_use_id, None)
                if pending is not None and not res.is_error:
                    self._tool(pending, res.text, out, now)
                elif pending is not None and pending.name == "Bash":
                    self._bash(pending, res.text, False, out, now)
        elif isinstance(event, Result) and event.text:
            action = "failed" if event.is_error else "completed"
            summary = clip(self.redact(event.text))
            out.entries.append(self._entry(Kind.SUMMARY, action, summary, now))
        return out

    def milestone(self, pct: int, now: float) -> PoolEntry:
        return self._entry(Kind.MILESTONE, "reached", f"{pct}%", now)

    def _tool(self, tool: ToolUse, text: str, out: Extracted, now: float) -> None:
        path = write_path(tool)
        if path is not None:
            full = absolute(path, self.workspace)
            name = self.redact(shown(full, self.root))
            out.writes.append(full)
            out.entries.append(
                self._entry(Kind.FILE, WRITE_TOOLS[tool.name], name, now, affects=(name,))
            )
        elif tool.name == "Bash":
            self._bash(tool, text, True, out, now)

    def _bash(self, tool: ToolUse, text: str, ok: bool, out: Extracted, now: float) -> None:
        command = tool.input.get("command")
        if not isinstance(command, str) or not command.strip():
            return
        shown_command = clip(self.redact(command), COMMAND_CHARS)
        if TEST_COMMAND.search(command):
            counts = ", ".join(f"{n} {what}" for n, what in TEST_COUNTS.findall(text)[-3:])
            summary = shown_command + (f" ({counts})" if counts else "")
            out.entries.append(self._entry(Kind.TEST, "passed" if ok else "failed", summary, now))
        elif ok:
            out.entries.append(self._entry(Kind.COMMAND, "ran", shown_command, now))

    def _declared(self, block: object, now: float) -> PoolEntry:
        if isinstance(block, Declared):
            return self._entry(
                Kind.DECLARED,
                block.action,
                clip(self.redact(block.summary)),
                now,
                topic=clip(self.redact(block.topic), 120),
                affects=block.affects,
                blocks=block.blocks,
            )
        why = getattr(block, "why", "unreadable")
        return self._entry(Kind.NOTE, "wrote a malformed pool block", clip(self.redact(why)), now)

    def _entry(
        self,
        kind: Kind,
        action: str,
        summary: str,
        now: float,
        *,
        topic: str | None = None,
        affects: tuple[str, ...] = (),
        blocks: tuple[str, ...] = (),
    ) -> PoolEntry:
        return PoolEntry(
            orchestration_id=self.orchestration_id,
            instance=self.instance,
            kind=kind,
            action=action,
            summary=summary,
            at_unix=now,
            topic=topic,
            affects=affects,
            blocks=blocks,
        )
