"""Typed stream-json events and the parser that makes them. Pure.

Unknown types and subtypes become :class:`Other` and never raise: the CLI adds event kinds
between versions. Lines that do not start with ``{`` are not JSON events (:func:`parse_line`
returns None); a line that starts with ``{`` but cannot be read even after repair is
:data:`UNPARSED`, so the caller can count it. The most frequent line by far, a
``content_block_delta`` stream event, takes a fast path that skips JSON decoding: accounting
needs nothing from it. Bad bytes never lose an event: a line orjson refuses (invalid UTF-8
in a string, an escaped lone surrogate) is repaired on a slow path that only that line pays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True, frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.cache_read_tokens - other.cache_read_tokens,
            self.cache_creation_tokens - other.cache_creation_tokens,
        )

    @classmethod
    def from_api(cls, raw: Any) -> Usage:
        if not isinstance(raw, dict):
            return cls()
        return cls(
            _int(raw.get("input_tokens")),
            _int(raw.get("output_tokens")),
            _int(raw.get("cache_read_input_tokens")),
            _int(raw.get("cache_creation_input_tokens")),
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "total_tokens": self.total,
        }


@dataclass(slots=True, frozen=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(slots=True, frozen=True)
class SystemInit:
    session_id: str
    model: str | None
    cwd: str | None
    permission_mode: str | None
    claude_code_version: str | None
    api_key_source: str | None
    tools: tuple[str, ...]
    slash_commands: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class ApiRetry:
    attempt: int
    max_retries: int
    retry_delay_ms: int
    error_status: int | None
    error: str


@dataclass(slots=True, frozen=True)
class MessageStart:
    """``stream_event`` / ``message_start``: opens an API response."""

    message_id: str
    model: str | None
    usage: Usage
    parent_tool_use_id: str | None = None


@dataclass(slots=True, frozen=True)
class MessageDelta:
    """``stream_event`` / ``message_delta``: final output tokens of the open response."""

    output_tokens: int
    stop_reason: str | None
    parent_tool_use_id: str | None = None


@dataclass(slots=True, frozen=True)
class Assistant:
    """One ``assistant`` line: one content block of an API response (several share an id)."""

    message_id: str
    model: str | None
    usage: Usage | None
    texts: tuple[str, ...]
    tool_uses: tuple[ToolUse, ...]
    parent_tool_use_id: str | None


@dataclass(slots=True, frozen=True)
class ToolResult:
    tool_use_id: str
    is_error: bool
    text: str


@dataclass(slots=True, frozen=True)
class UserToolResults:
    results: tuple[ToolResult, ...]


@dataclass(slots=True, frozen=True)
class PermissionDenial:
    tool_name: str
    tool_use_id: str | None


@dataclass(slots=True, frozen=True)
class Result:
    subtype: str
    is_error: bool
    num_turns: int
    duration_ms: int
    session_id: str | None
    total_cost_usd: float | None
    usage: Usage
    model_usage: dict[str, Any]
    permission_denials: tuple[PermissionDenial, ...]
    api_error_status: int | None
    text: str | None
    api_error: str | None = None  # e.g. "usage_limit_reached" (an account usage limit)
    terminal_reason: str | None = None
    structured_output: Any = None  # with --json-schema: the object the model returned


@dataclass(slots=True, frozen=True)
class WindowUsage:
    """One window of ``rate_limit_info.unifiedWindows`` (five_hour, seven_day, ...)."""

    utilization: float | None
    resets_at: float | None
    status: str | None


@dataclass(slots=True, frozen=True)
class RateLimit:
    """``rate_limit_event``: the account's usage-limit state, written when it changes.

    Only a subscription (OAuth) login gets these (see coordinator/limits/CLI-FACTS.md).
    ``status`` is ``allowed``, ``allowed_warning`` or ``rejected``; any other text is kept as is.
    ``utilization`` (0..1) is the representative window's, top-level at allowed_warning,
    else taken from ``windows`` for ``limit_type`` when present.
    """

    status: str
    resets_at: float | None
    limit_type: str | None
    utilization: float | None
    using_overage: bool
    surpassed_threshold: float | None = None
    windows: dict[str, WindowUsage] = field(default_factory=dict, compare=False)

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"

    @property
    def limited(self) -> bool:
        """Rejected and not paid by overage: requests on this account now fail. (A
        ``rejected`` with ``isUsingOverage: true`` comes on a served 200; the run goes on.)"""
        return self.status == "rejected" and not self.using_overage

    @property
    def warning(self) -> bool:
        return self.status == "allowed_warning"


@dataclass(slots=True, frozen=True)
class Activity:
    """A line that shows the instance is alive but carries nothing to account."""

    kind: str


@dataclass(slots=True, frozen=True)
class Other:
    type: str
    subtype: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


Event = (
    SystemInit
    | ApiRetry
    | MessageStart
    | MessageDelta
    | Assistant
    | UserToolResults
    | Result
    | RateLimit
    | Activity
    | Other
)

_DELTA_PREFIX = b'{"type":"stream_event","event":{"type":"content_block_delta"'
_DELTA = Activity("content_block_delta")
UNPARSED = Activity("unparsed")  # starts like an event, is not JSON: the caller counts it
# \uD800-\uDBFF not followed by a low half, or \uDC00-\uDFFF not preceded by a high one:
# JavaScript's JSON.stringify writes these when a string was cut inside a surrogate pair.
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_TEXT_PREVIEW = 2000


def parse_line(line: bytes) -> Event | None:
    """Parse one framed line; None for blank or non-JSON lines, :data:`UNPARSED` for a line
    that starts with ``{`` and cannot be read. Never raises."""
    if line.startswith(_DELTA_PREFIX):
        return _DELTA
    stripped = line.lstrip()
    if not stripped.startswith(b"{"):
        return None
    try:
        obj = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        obj = _repaired(stripped)
    if not isinstance(obj, dict):
        return UNPARSED
    return parse_event(obj)


def _repaired(line: bytes) -> Any:
    """The slow path, only for a line orjson refused: invalid UTF-8 becomes U+FFFD and an
    escaped lone surrogate becomes \\ufffd, so the event's numbers still count. None if it
    is still not JSON."""
    text = _LONE_SURROGATE.sub(r"\\ufffd", line.decode("utf-8", "replace"))
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def parse_event(obj: dict[str, Any]) -> Event:
    kind = obj.get("type")
    try:
        if kind == "stream_event":
            return _stream_event(obj.get("event") or {}, _str(obj.get("parent_tool_use_id")))
        if kind == "assistant":
            return _assistant(obj)
        if kind == "user":
            return _user(obj)
        if kind == "result":
            return _result(obj)
        if kind == "rate_limit_event":
            return _rate_limit(obj)
        if kind == "system":
            sub = obj.get("subtype")
            if sub == "init":
                return _init(obj)
            if sub == "api_retry":
                return _retry(obj)
            return Other("system", sub if isinstance(sub, str) else None, obj)
    except (AttributeError, TypeError, ValueError):
        pass  # a known type with an unexpected shape: keep it, but as Other
    return Other(str(kind), _str(obj.get("subtype")), obj)


def _stream_event(ev: dict[str, Any], parent: str | None) -> Event:
    etype = ev.get("type")
    if etype == "message_start":
        msg = ev.get("message") or {}
        return MessageStart(
            str(msg.get("id", "")), _str(msg.get("model")), Usage.from_api(msg.get("usage")), parent
        )
    if etype == "message_delta":
        usage = ev.get("usage") or {}
        delta = ev.get("delta") or {}
        return MessageDelta(
            _int(usage.get("output_tokens")), _str(delta.get("stop_reason")), parent
        )
    return Activity(str(etype))


def _assistant(obj: dict[str, Any]) -> Assistant:
    msg = obj.get("message") or {}
    texts: list[str] = []
    tools: list[ToolUse] = []
    for block in msg.get("content") or ():
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if btype == "text":
            texts.append(str(block.get("text", "")))
        elif btype == "tool_use":
            raw_input = block.get("input")
            tools.append(
                ToolUse(
                    str(block.get("id", "")),
                    str(block.get("name", "?")),
                    raw_input if isinstance(raw_input, dict) else {},
                )
            )
    raw_usage = msg.get("usage")
    return Assistant(
        message_id=str(msg.get("id", "")),
        model=_str(msg.get("model")),
        usage=Usage.from_api(raw_usage) if isinstance(raw_usage, dict) else None,
        texts=tuple(texts),
        tool_uses=tuple(tools),
        parent_tool_use_id=_str(obj.get("parent_tool_use_id")),
    )


def _user(obj: dict[str, Any]) -> Event:
    msg = obj.get("message") or {}
    content = msg.get("content")
    if not isinstance(content, list):
        return Activity("user")
    results = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            results.append(
                ToolResult(
                    str(block.get("tool_use_id", "")),
                    bool(block.get("is_error", False)),
                    _preview(block.get("content")),
                )
            )
    return UserToolResults(tuple(results)) if results else Activity("user")


def _result(obj: dict[str, Any]) -> Result:
    denials = tuple(
        PermissionDenial(str(d.get("tool_name", "?")), _str(d.get("tool_use_id")))
        for d in obj.get("permission_denials") or ()
        if isinstance(d, dict)
    )
    cost = obj.get("total_cost_usd")
    model_usage = obj.get("modelUsage")
    status = obj.get("api_error_status")
    text = obj.get("result")
    return Result(
        subtype=str(obj.get("subtype", "")),
        is_error=bool(obj.get("is_error", False)),
        num_turns=_int(obj.get("num_turns")),
        duration_ms=_int(obj.get("duration_ms")),
        session_id=_str(obj.get("session_id")),
        total_cost_usd=float(cost) if isinstance(cost, int | float) else None,
        usage=Usage.from_api(obj.get("usage")),
        model_usage=model_usage if isinstance(model_usage, dict) else {},
        permission_denials=denials,
        api_error_status=status if isinstance(status, int) else None,
        text=text[:_TEXT_PREVIEW] if isinstance(text, str) else None,
        api_error=_str(obj.get("api_error")),
        terminal_reason=_str(obj.get("terminal_reason")),
        structured_output=obj.get("structured_output"),
    )


def _rate_limit(obj: dict[str, Any]) -> RateLimit:
    info = obj.get("rate_limit_info")
    info = info if isinstance(info, dict) else {}
    status = info.get("status")
    limit_type = _str(info.get("rateLimitType"))
    raw_windows = info.get("unifiedWindows")
    windows = {
        str(name): WindowUsage(
            _fraction(window.get("utilization")),
            _epoch(window.get("resetsAt")),
            _str(window.get("status")),
        )
        for name, window in (raw_windows.items() if isinstance(raw_windows, dict) else ())
        if isinstance(window, dict)
    }
    utilization = _fraction(info.get("utilization"))
    if utilization is None and limit_type in windows:
        utilization = windows[limit_type].utilization
    return RateLimit(
        status=status if isinstance(status, str) and status else "unknown",
        resets_at=_epoch(info.get("resetsAt")),
        limit_type=limit_type,
        utilization=utilization,
        using_overage=info.get("isUsingOverage") is True,
        surpassed_threshold=_fraction(info.get("surpassedThreshold")),
        windows=windows,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _fraction(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _epoch(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _init(obj: dict[str, Any]) -> SystemInit:
    return SystemInit(
        session_id=str(obj.get("session_id", "")),
        model=_str(obj.get("model")),
        cwd=_str(obj.get("cwd")),
        permission_mode=_str(obj.get("permissionMode")),
        claude_code_version=_str(obj.get("claude_code_version")),
        api_key_source=_str(obj.get("apiKeySource")),
        tools=tuple(str(t) for t in obj.get("tools") or ()),
        slash_commands=tuple(str(c) for c in obj.get("slash_commands") or ()),
    )


def _retry(obj: dict[str, Any]) -> ApiRetry:
    status = obj.get("error_status")
    return ApiRetry(
        attempt=_int(obj.get("attempt")),
        max_retries=_int(obj.get("max_retries")),
        retry_delay_ms=_int(obj.get("retry_delay_ms")),
        error_status=status if isinstance(status, int) else None,
        error=str(obj.get("error") or "unknown"),
    )


def _preview(content: Any) -> str:
    if isinstance(content, str):
        return content[:_TEXT_PREVIEW]
    if isinstance(content, list):
        parts = [str(c.get("text", "")) for c in content if isinstance(c, dict) and "text" in c]
        return "\n".join(parts)[:_TEXT_PREVIEW]
    return ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
