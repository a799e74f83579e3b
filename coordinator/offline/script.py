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


class CacheCreation(_Model):
    """How the cache-creation tokens split by cache lifetime, as the API's
    ``usage.cache_creation`` reports it. Either part may be left out: it is the rest."""

    ephemeral_5m_input_tokens: int | None = Field(default=None, ge=0)
    ephemeral_1h_input_tokens: int | None = Field(default=None, ge=0)


class Usage(_Model):
    """Token counts reported for one response (all four fields the CLI sums).

    ``cache_creation`` splits ``cache_creation_input_tokens`` into the 5-minute and the
    1-hour cache writes (default: all 5-minute). Given alone, its parts set the total.
    """

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation: CacheCreation | None = None

    @model_validator(mode="before")
    @classmethod
    def _total_from_split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cache_creation_input_tokens" not in data:
            split = data.get("cache_creation")
            if isinstance(split, dict):
                parts = [split.get(f"ephemeral_{t}_input_tokens") for t in ("5m", "1h")]
                if all(isinstance(p, int) or p is None for p in parts):
                    return data | {"cache_creation_input_tokens": sum(p or 0 for p in parts)}
        return data

    @model_validator(mode="after")
    def _split_adds_up(self) -> Usage:
        split = self.cache_creation
        if split is None:
            return self
        five, hour = split.ephemeral_5m_input_tokens, split.ephemeral_1h_input_tokens
        total = self.cache_creation_input_tokens
        if five is not None and hour is not None and five + hour != total:
            raise ValueError(
                f"cache_creation: ephemeral_5m_input_tokens {five} + ephemeral_1h_input_tokens "
                f"{hour} != cache_creation_input_tokens {total}"
            )
        if max(five or 0, hour or 0) > total:
            raise ValueError(
                f"cache_creation: a part is larger than cache_creation_input_tokens {total}"
            )
        return self

    @property
    def cache_split(self) -> tuple[int, int]:
        """``(ephemeral_5m_input_tokens, ephemeral_1h_input_tokens)``."""
        total = self.cache_creation_input_tokens
        split = self.cache_creation
        if split is None:
            return total, 0
        if split.ephemeral_1h_input_tokens is not None:
            return total - split.ephemeral_1h_input_tokens, split.ephemeral_1h_input_tokens
        five = total if split.ephemeral_5m_input_tokens is None else split.ephemeral_5m_input_tokens
        return five, total - five


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


RateLimitStatus = Literal["allowed", "allowed_warning", "rejected"]
# The windows the unified headers report, as (representative claim, header infix).
RATE_LIMIT_WINDOWS: tuple[tuple[str, str, int], ...] = (
    ("five_hour", "5h", 5 * 3600),
    ("seven_day", "7d", 7 * 24 * 3600),
)
REJECTED_MESSAGE = "This request would exceed your account's rate limit. Please try again later."


class RateLimit(_Model):
    """The unified rate-limit headers of a subscription (OAuth) account on one response.

    ``rejected`` is served as a 429 ``rate_limit_error`` carrying the headers (unless
    ``overage_status`` is allowed(_warning): then overage pays and it is a 200); ``allowed``
    and ``allowed_warning`` go on the normal 200 answer. The reset is ``resets_in_s``
    seconds after the server answers (scripts stay reusable) or ``resets_at`` (epoch s);
    neither means 5 hours ahead. ``type`` is the representative claim (the window that
    decides). ``utilization_5h``/``utilization_7d`` are the per-window spent fractions;
    the window named by ``type`` resets at the reset above, the other one a full window
    after ``opened`` (the server's start: a real window opens once, so its reset stays put
    from one answer to the next). At ``allowed_warning`` the representative window also gets
    ``-status: allowed_warning`` and ``-surpassed-threshold`` (``surpassed_threshold``,
    else that window's utilization, else 0.75): the pinned CLI derives its warning from
    those per-window headers, not from the top-level status (see coordinator/limits/CLI-FACTS.md).
    """

    status: RateLimitStatus = "allowed"
    resets_in_s: float | None = Field(default=None, ge=0)
    resets_at: float | None = Field(default=None, ge=0)
    type: str = Field(default="five_hour", min_length=1)
    utilization_5h: float | None = Field(default=None, ge=0, le=1)
    utilization_7d: float | None = Field(default=None, ge=0, le=1)
    surpassed_threshold: float | None = Field(default=None, ge=0, le=1)
    overage_status: RateLimitStatus | None = None
    overage_disabled_reason: str | None = Field(default=None, min_length=1)
    fallback_available: bool = False

    @model_validator(mode="after")
    def _one_reset(self) -> RateLimit:
        if self.resets_in_s is not None and self.resets_at is not None:
            raise ValueError("give resets_in_s or resets_at, not both")
        return self

    def reset_epoch(self, now: float) -> int:
        """The reset as epoch seconds, for a response answered at ``now``."""
        if self.resets_at is not None:
            return round(self.resets_at)
        return round(now + (self.resets_in_s if self.resets_in_s is not None else 5 * 3600))

    def headers(self, now: float, opened: float | None = None) -> dict[str, str]:
        """The ``anthropic-ratelimit-unified-*`` headers as the real API names them."""
        window_open = round(now if opened is None else opened)
        prefix = "anthropic-ratelimit-unified-"
        reset = self.reset_epoch(now)
        headers = {
            prefix + "status": self.status,
            prefix + "reset": str(reset),
            prefix + "representative-claim": self.type,
            prefix + "fallback": "available" if self.fallback_available else "unavailable",
        }
        utilizations = {"five_hour": self.utilization_5h, "seven_day": self.utilization_7d}
        for claim, infix, window_s in RATE_LIMIT_WINDOWS:
            utilization = utilizations[claim]
            representative = claim == self.type
            if utilization is None and not representative:
                continue
            window_status = self.status if representative else "allowed"
            if utilization is not None:
                headers[f"{prefix}{infix}-utilization"] = f"{utilization:g}"
            headers[f"{prefix}{infix}-reset"] = str(
                reset if representative else window_open + window_s
            )
            headers[f"{prefix}{infix}-status"] = window_status
            if representative and self.status == "allowed_warning":
                threshold = self.surpassed_threshold
                if threshold is None:
                    threshold = utilization if utilization is not None else 0.75
                headers[f"{prefix}{infix}-surpassed-threshold"] = f"{threshold:g}"
        if self.overage_status is not None:
            headers[prefix + "overage-status"] = self.overage_status
            headers[prefix + "overage-reset"] = str(reset)
        if self.overage_disabled_reason is not None:
            headers[prefix + "overage-disabled-reason"] = self.overage_disabled_reason
        return headers


class Response(_Model):
    """One HTTP response: a streamed assistant message, an error, or a faulty stream.

    ``rate_limit`` adds a subscription account's unified rate-limit headers; a
    ``rejected`` one makes this response a 429 ``rate_limit_error`` (the ``error``, if
    given, sets its message and ``x-should-retry``).
    """

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
    rate_limit: RateLimit | None = None
    repeat: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _error_excludes_content(self) -> Response:
        if self.rejected and self.error is not None and self.error.status != 429:
            raise ValueError("a rejected rate_limit is a 429; the error status must be 429")
        if self.error is not None or self.rejected:
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
                what = "an error" if self.error is not None else "a rejected rate_limit"
                raise ValueError(f"{what} response cannot also have {', '.join(content)}")
        return self

    @property
    def rejected(self) -> bool:
        """The account limit refuses this request: a 429 with the unified headers. A
        ``rejected`` limit whose ``overage_status`` is allowed(_warning) is served (200):
        the request is paid by overage (the CLI then says ``isUsingOverage: true``)."""
        limit = self.rate_limit
        return (
            limit is not None
            and limit.status == "rejected"
            and limit.overage_status not in ("allowed", "allowed_warning")
        )

    @property
    def effective_error(self) -> ApiError | None:
        """The HTTP error this response answers with, if any (a rejection included)."""
        if self.error is not None:
            return self.error
        if self.rejected:
            return ApiError(status=429, message=REJECTED_MESSAGE)
        return None

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
