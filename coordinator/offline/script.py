"""The script an offline model server plays: which HTTP response each request gets.

A script maps conversation keys to conversations. A conversation is an ordered list of
responses, one per HTTP request served (errors and faults included), so a 529 storm is
N error entries followed by a success entry. When a conversation runs out, its ``after``
response is served for every further request, so the CLI always comes to an end.

Example::

    {
      "conversations": {
        "alpha": {
          "responses": [
            {"error": {"status": 529}, "repeat": 2},
            {"tool_uses": [{"name": "Bash", "input": {"command": "echo hi > out.txt"}}],
             "usage": {"input_tokens": 120, "output_tokens": 30}},
            {"text": "Done.", "usage": {"input_tokens": 150, "output_tokens": 5}}
          ]
        }
      },
      "default": {"responses": [{"text": "Hello."}]}
    }
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coordinator.errors import MISSING, ConfigError

StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"]
# truncate: the body ends before message_delta; malformed: unparsable SSE data;
# disconnect: the TCP connection is closed mid-body.
Fault = Literal["truncate", "malformed", "disconnect"]

# The error "type" the real API puts in its JSON body for each status.
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Usage(_Model):
    """Token counts reported for one response (all four fields the CLI sums)."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)


class ToolUse(_Model):
    """A tool call the CLI will really execute (Bash, Write, Edit, Read, ...)."""

    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, min_length=1)


class ApiError(_Model):
    """An HTTP error answer with Anthropic's JSON error body.

    ``should_retry`` sets the ``x-should-retry`` header: ``false`` makes the CLI give up
    at once (no retries); absent, the CLI retries 401/429/5xx with exponential backoff.
    ``retry_after_s`` sets ``retry-after``; the 2.1.329 CLI keeps its own backoff anyway.
    """

    status: int = Field(ge=400, le=599)
    type: str | None = None
    message: str | None = None
    should_retry: bool | None = None
    retry_after_s: float | None = Field(default=None, ge=0)

    @property
    def error_type(self) -> str:
        if self.type is not None:
            return self.type
        return _ERROR_TYPES.get(
            self.status, "api_error" if self.status >= 500 else "invalid_request_error"
        )

    @property
    def error_message(self) -> str:
        return self.message or f"offline scripted error {self.status}"


class Response(_Model):
    """One HTTP response: a streamed assistant message, an error, or a faulty stream."""

    text: str | None = None
    thinking: str | None = None
    tool_uses: tuple[ToolUse, ...] = ()
    stop_reason: StopReason | None = None
    usage: Usage = Usage(input_tokens=10, output_tokens=5)
    model: str | None = Field(default=None, min_length=1)
    delay_s: float = Field(default=0.0, ge=0)
    chunk_delay_s: float = Field(default=0.0, ge=0)
    error: ApiError | None = None
    fault: Fault | None = None
    repeat: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _error_excludes_content(self) -> Response:
        if self.error is not None:
            content = [
                name
                for name, value in (
                    ("text", self.text),
                    ("thinking", self.thinking),
                    ("tool_uses", self.tool_uses or None),
                    ("fault", self.fault),
                )
                if value is not None
            ]
            if content:
                raise ValueError(f"an error response cannot also have {', '.join(content)}")
        return self

    @property
    def effective_stop_reason(self) -> StopReason:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if self.tool_uses else "end_turn"


DEFAULT_AFTER = Response(text="Done.", usage=Usage(input_tokens=5, output_tokens=2))


class Conversation(_Model):
    """An ordered list of responses, and what to serve once they are used up."""

    responses: tuple[Response, ...] = ()
    after: Response = DEFAULT_AFTER
    match: str | None = Field(default=None, min_length=1)

    @property
    def scripted_count(self) -> int:
        """How many requests the scripted responses cover (``repeat`` expanded)."""
        return sum(response.repeat for response in self.responses)

    def response_at(self, index: int) -> Response:
        """The response for the ``index``-th request (0-based), ``repeat`` expanded."""
        if index < 0:
            raise IndexError(index)
        remaining = index
        for response in self.responses:
            if remaining < response.repeat:
                return response
            remaining -= response.repeat
        return self.after


class Script(_Model):
    """Conversations keyed by conversation key, plus the one unknown keys get."""

    conversations: dict[str, Conversation] = Field(default_factory=dict)
    default: Conversation = Conversation(
        responses=(Response(text="Hello from the offline model."),)
    )

    def conversation(self, key: str) -> Conversation:
        return self.conversations.get(key, self.default)


def load_script(source: str | Path | Mapping[str, Any], *, name: str | None = None) -> Script:
    """Validate a script from a JSON file path or an already-parsed mapping.

    Raises :class:`ConfigError` naming the file, the field path and the bad value.
    """
    if isinstance(source, Mapping):
        return _validate(dict(source), name or "<script>")
    path = Path(source)
    label = name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(label, "", MISSING, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            label, f"line {exc.lineno} column {exc.colno}", MISSING, f"invalid JSON: {exc.msg}"
        ) from exc
    return _validate(data, label)


def _validate(data: Any, label: str) -> Script:
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"])
        value = first.get("input", MISSING) if first["type"] != "missing" else MISSING
        raise ConfigError(label, path, value, first["msg"]) from exc
