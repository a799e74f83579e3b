"""Per tool name: calls, errors, denials, and the tokens of the turns in which it ran. Pure.

Attribution: a tool "ran in" the API response (model turn) that asked for it; that
response's tokens (input, output, cache read and cache creation, as streamed) count for
every distinct tool it called. So per tool the figure answers "what did the turns that used
this tool cost"; two tools called in one response both carry it, and the sum over tools can
exceed the instance's total. Responses of subagents are attributed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runner.events import Assistant, Event, UserToolResults


@dataclass(slots=True)
class ToolLedger:
    _names: dict[str, str] = field(default_factory=dict)  # tool_use id -> tool name
    _turns: dict[str, set[str]] = field(default_factory=dict)  # tool name -> message ids
    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def feed(self, event: Event) -> None:
        if isinstance(event, Assistant):
            for tool in event.tool_uses:
                if tool.id in self._names:
                    continue
                self._names[tool.id] = tool.name
                self.calls[tool.name] = self.calls.get(tool.name, 0) + 1
                if event.message_id:
                    self._turns.setdefault(tool.name, set()).add(event.message_id)
        elif isinstance(event, UserToolResults):
            for res in event.results:
                if res.is_error:
                    name = self._names.get(res.tool_use_id, "?")
                    self.errors[name] = self.errors.get(name, 0) + 1

    def as_dict(
        self, message_tokens: Callable[[str], int], denials: Mapping[str, int]
    ) -> dict[str, dict[str, int]]:
        names = sorted({*self.calls, *self.errors, *denials})
        return {
            name: {
                "calls": self.calls.get(name, 0),
                "errors": self.errors.get(name, 0),
                "denials": int(denials.get(name, 0)),
                "tokens": sum(message_tokens(m) for m in self._turns.get(name, ())),
            }
            for name in names
        }
