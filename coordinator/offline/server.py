"""A local HTTP server speaking the Anthropic Messages API from a script.

It lets the real, pinned ``claude`` CLI run end to end with no network and no API key:
deterministic answers, real tool execution, known token counts. Pure asyncio streams,
enough HTTP/1.1 for the CLI (keep-alive, Content-Length or chunked request bodies,
chunked SSE responses).

Facts verified against claude 2.1.329 in ``-p`` mode (see tests/offline/test_claude_e2e.py):

* Requests: ``POST /v1/messages?beta=true`` with ``"stream": true``. Without
  ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` it first sends ``HEAD /api/hello`` (a
  connectivity check); any ``HEAD`` gets 200 here. No token counting, title generation or
  quota-probe request was seen in ``-p`` runs; such requests are still recognised
  (``/v1/messages/count_tokens``, ``max_tokens <= 1``), answered, and recorded with
  ``auxiliary=True`` without moving any conversation's cursor.
* Headers: ``ANTHROPIC_CUSTOM_HEADERS`` ("Name: Value" lines) is forwarded on every
  request, so ``X-Coordinator-Instance: <key>`` identifies the conversation. The CLI also
  sends ``X-Claude-Code-Session-Id`` (the ``--session-id``), ``x-api-key``,
  ``anthropic-version``, ``anthropic-beta`` and ``User-Agent: claude-cli/<version> ...``.
* Body: ``messages[0]`` is the user prompt; a trailing ``role: "system"`` message with
  environment details follows it. Tool results come back in the last ``user`` message.
* Usage: the CLI takes input and cache counts from ``message_start`` and the final
  ``output_tokens`` from ``message_delta``; ``result.usage`` is the exact sum over the
  complete messages served (:meth:`ModelServer.usage_by_key`). ``result.num_turns`` counts
  assistant turns, including the synthetic one written when the CLI gives up.
  ``message_start`` usage carries the API's ``cache_creation`` split
  (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``; ``Usage.cache_creation``
  in a script, default all 5-minute) and ``service_tier``; ``message_delta`` repeats the
  cumulative input and cache counts beside the final output (no split, as the API's
  MessageDeltaUsage). The CLI copies the split into the assistant lines of its stream and
  of its transcript (``$CLAUDE_CONFIG_DIR/projects/<cwd>/<session>.jsonl``) and sums it in
  ``result.usage.cache_creation``. Without it the CLI writes a zero split there while
  ``cache_creation_input_tokens`` stays right, and ccusage (which reads the split) reports
  0 cache-creation tokens. Stopping the server with idle keep-alive connections is silent.
* Errors: 401, 429, 500 and 529 are all retried, 10 times by default, with exponential
  backoff (about 0.5, 1, 2, 4, 9, 17, 35 s ... with jitter), each announced by a
  ``system/api_retry`` event (``error``: authentication_failed, rate_limit, server_error,
  overloaded). ``retry-after``, ``retry-after-ms`` and
  ``CLAUDE_CODE_OVERLOADED_RETRY_BASE_DELAY_MS`` do not shorten it;
  ``x-should-retry: false`` stops retries at once; ``CLAUDE_CODE_MAX_RETRIES=N`` caps
  them. A run that gives up ends with ``result.is_error: true`` (subtype ``success``),
  ``api_error_status`` set, ``terminal_reason: "api_error"``, zero usage, exit code 1.
* Faults (the first events of the message are sent, never ``message_delta``):
  ``truncate`` ends the body cleanly without ``message_stop``: the CLI retries like an
  error (``api_retry`` with ``error_status: null``, about 0.5 s later). ``malformed``
  sends unparsable SSE data: the CLI prints "Could not parse message into JSON" on
  stderr and asks again at once without streaming (``stream: false``, ``max_tokens:
  64000``). In both cases the partial message's ``message_start`` usage (output
  placeholder 1 included) IS added to ``result.usage``: compare with
  ``usage_by_key(include_faults=True)``. ``disconnect`` closes the TCP connection
  mid-body and is retried too, but whether the partial is counted is a race inside
  the CLI (it is only if the CLI read ``message_start`` before the reset).
* Timing: a run of three scripted requests with two tool calls takes about 0.9 s wall.
* Usage limits (``Response.rate_limit``; details and the exact lines in
  coordinator/limits/CLI-FACTS.md):
  the CLI reads the ``anthropic-ratelimit-unified-*`` headers only when it authenticates
  with ``CLAUDE_CODE_OAUTH_TOKEN`` and no ``ANTHROPIC_API_KEY`` (``ANTHROPIC_BASE_URL``
  still applies). It then writes a ``rate_limit_event`` line each time the info changes
  (not on every response). A top-level ``allowed_warning`` alone reads as ``allowed``: the
  warning comes from the per-window ``-5h-``/``-7d-`` ``status`` and
  ``surpassed-threshold`` headers, which the server sends for the representative window.
  A ``rejected`` 429 is not retried: one request, then result ``is_error: true``,
  ``api_error_status: 429``, ``api_error: "usage_limit_reached"``, ``terminal_reason:
  "api_error"``, text "You've hit your 5-hour limit · resets 10:36am (UTC)", exit code 1.
  With an API key the same 429 is retried like any 429 and no event is written. A
  ``rejected`` with ``overage_status: allowed`` is served as a 200 (overage pays): the
  event says ``isUsingOverage: true`` and the run goes on.

Models: a response's ``model`` if the script sets one, else the requested model (so the
CLI's cost table applies), else ``claude-sonnet-4-5``.

Conversation keys: the ``X-Coordinator-Instance`` header if present; else the name of
the first conversation whose ``match`` occurs in the first user message; else the
``X-Claude-Code-Session-Id`` header (so unrelated default runs keep separate cursors);
else ``"default"``. Keys without a conversation of their own play ``script.default``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http
import json
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from coordinator.offline.script import Response, Script, Usage, load_script

INSTANCE_HEADER = "x-coordinator-instance"
SESSION_HEADER = "x-claude-code-session-id"
DEFAULT_MODEL = "claude-sonnet-4-5"
MAX_BODY_BYTES = 256 * 1024 * 1024
# An SSE event whose data is cut-off JSON: what the "malformed" fault sends.
MALFORMED_EVENT = b'event: content_block_delta\ndata: {"type":"content_block_del\n\n'
AUXILIARY_RESPONSE = Response(text="OK", usage=Usage(input_tokens=1, output_tokens=1))

JsonDict = dict[str, Any]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The four token counts of one response, or a sum of them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass(frozen=True, slots=True)
class ServedResponse:
    """Ground truth for one answer to a messages request.

    ``usage`` is what the answer reported: the full counts for a complete message, the
    ``message_start`` snapshot (output placeholder included) for a faulty stream, zero
    for an HTTP error. ``index`` is the conversation cursor (-1 for auxiliary requests);
    an index past the scripted responses means the ``after`` response was served.
    """

    key: str
    index: int
    status: int
    message_id: str | None
    usage: TokenUsage
    tool_uses: tuple[str, ...]
    served_at: float
    auxiliary: bool = False
    fault: str | None = None

    @property
    def complete(self) -> bool:
        """A whole assistant message of a conversation (not an error, fault or auxiliary)."""
        return self.status == 200 and self.fault is None and not self.auxiliary


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A summary of one request body, to check what the CLI sent."""

    key: str
    path: str
    auxiliary: bool
    model: str | None
    stream: bool
    max_tokens: int | None
    message_count: int
    last_has_tool_result: bool
    tool_result_ids: tuple[str, ...]
    session_id: str | None
    received_at: float
    last_user_text: str = ""  # the text blocks of the last user message


# ------------------------------------------------------------------------ messages


def new_message_id() -> str:
    return "msg_01" + uuid.uuid4().hex[:22]


def new_tool_use_id() -> str:
    return "toolu_01" + uuid.uuid4().hex[:22]


@dataclass(frozen=True, slots=True)
class _Block:
    start: JsonDict
    deltas: tuple[JsonDict, ...]
    final: JsonDict  # the block as a non-streaming message carries it


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _blocks(response: Response) -> list[_Block]:
    blocks: list[_Block] = []
    if response.thinking is not None:
        signature = "offline-" + uuid.uuid4().hex
        deltas = [{"type": "thinking_delta", "thinking": c} for c in _chunks(response.thinking, 24)]
        deltas.append({"type": "signature_delta", "signature": signature})
        blocks.append(
            _Block(
                {"type": "thinking", "thinking": "", "signature": ""},
                tuple(deltas),
                {"type": "thinking", "thinking": response.thinking, "signature": signature},
            )
        )
    if response.text is not None:
        blocks.append(
            _Block(
                {"type": "text", "text": ""},
                tuple({"type": "text_delta", "text": c} for c in _chunks(response.text, 24)),
                {"type": "text", "text": response.text},
            )
        )
    for tool in response.tool_uses:
        tool_id = tool.id or new_tool_use_id()
        encoded = json.dumps(tool.input, separators=(",", ":"))
        parts = ["", *_chunks(encoded, max(1, len(encoded) // 3 + 1))]
        blocks.append(
            _Block(
                {"type": "tool_use", "id": tool_id, "name": tool.name, "input": {}},
                tuple({"type": "input_json_delta", "partial_json": p} for p in parts),
                {"type": "tool_use", "id": tool_id, "name": tool.name, "input": tool.input},
            )
        )
    return blocks


def _usage_of(response: Response) -> TokenUsage:
    u = response.usage
    return TokenUsage(
        u.input_tokens, u.output_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens
    )


def _start_usage(response: Response) -> TokenUsage:
    """The ``message_start`` snapshot: final input and cache counts, output placeholder."""
    u = response.usage
    return TokenUsage(
        u.input_tokens,
        min(1, u.output_tokens),
        u.cache_creation_input_tokens,
        u.cache_read_input_tokens,
    )


def _usage_payload(response: Response, tokens: TokenUsage) -> JsonDict:
    """A message's ``usage`` as the API sends it in ``message_start`` and in a whole
    message: the four counts, the ``cache_creation`` split by cache lifetime (the CLI
    copies it into its transcripts, where ccusage reads cache writes from it) and the
    service tier."""
    five, hour = response.usage.cache_split
    return tokens.as_dict() | {
        "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
        "service_tier": "standard",
    }


def _delta_usage(tokens: TokenUsage) -> JsonDict:
    """``message_delta`` usage as the API sends it: cumulative counts, no split."""
    return tokens.as_dict()


def _message_shell(message_id: str, model: str) -> JsonDict:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }


def sse_events(response: Response, message_id: str, model: str) -> Iterator[tuple[str, JsonDict]]:
    """The SSE events of a streamed answer, in the real API's order.

    ``message_start`` carries the input and cache counts (with the ``cache_creation``
    split) and a placeholder ``output_tokens`` (as the real API does); ``message_delta``
    carries the final one beside the same cumulative input and cache counts.
    """
    usage = _usage_of(response)
    message = _message_shell(message_id, model) | {
        "usage": _usage_payload(response, _start_usage(response))
    }
    yield "message_start", {"type": "message_start", "message": message}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(_blocks(response)):
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": block.start,
            },
        )
        for delta in block.deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": response.effective_stop_reason, "stop_sequence": None},
            "usage": _delta_usage(usage),
        },
    )
    yield "message_stop", {"type": "message_stop"}


def full_message(response: Response, message_id: str, model: str) -> JsonDict:
    """The same answer as one non-streaming JSON message."""
    return _message_shell(message_id, model) | {
        "content": [block.final for block in _blocks(response)],
        "stop_reason": response.effective_stop_reason,
        "usage": _usage_payload(response, _usage_of(response)),
    }


def error_body(error_type: str, message: str) -> JsonDict:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def encode_sse(event: str, data: JsonDict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# ---------------------------------------------------------------------------- HTTP


class _BadRequest(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError as exc:  # a line over the reader's limit
        raise _BadRequest("request line or header too long") from exc


async def _read_request(reader: asyncio.StreamReader) -> _HttpRequest | None:
    """One request from the connection; None at a clean end of stream."""
    line = await _readline(reader)
    while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between requests
        line = await _readline(reader)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"bad request line {line[:80]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    while True:
        raw = await _readline(reader)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise _BadRequest("connection closed inside the headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest(f"bad header line {raw[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    body = await _read_body(reader, headers)
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise _BadRequest("bad gzip request body") from exc
    return _HttpRequest(method.upper(), target, version, headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await _readline(reader)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadRequest(f"bad chunk size {size_line[:40]!r}") from exc
            if size == 0:
                while (await _readline(reader)) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise _BadRequest("bad Content-Length") from exc
    if not 0 <= length <= MAX_BODY_BYTES:
        raise _BadRequest(f"Content-Length {length} out of range")
    return await reader.readexactly(length) if length else b""


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Overloaded" if status == 529 else "Error"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [_status_line(status)]
    lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
    lines.append(b"\r\n")
    return b"".join(lines)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# -------------------------------------------------------------------------- server


@dataclass(slots=True)
class _Ledger:
    """Ground truth shared between the server's loop thread and readers in other threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    served: list[ServedResponse] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)


class ModelServer:
    """Serves a :class:`Script` over HTTP on loopback; ``async with`` starts and stops it."""

    def __init__(self, script: Script | Mapping[str, Any]) -> None:
        self.script = script if isinstance(script, Script) else load_script(script)
        self._ledger = _Ledger()
        self._cursors: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._url: str | None = None
        self._opened = time.time()  # when the rate-limit windows it reports opened

    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen and return the base URL (``http://host:port``)."""
        if self._server is not None:
            raise RuntimeError("ModelServer already started")
        self._server = await asyncio.start_server(self._serve_connection, host, port)
        bound_port = self._server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        """Stop listening and drop open connections (idle keep-alives included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("ModelServer not started")
        return self._url

    # ground truth (safe to read from any thread)

    @property
    def served(self) -> list[ServedResponse]:
        with self._ledger.lock:
            return list(self._ledger.served)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._ledger.lock:
            return list(self._ledger.requests)

    def usage_by_key(self, *, include_faults: bool = False) -> dict[str, TokenUsage]:
        """Token totals per conversation key over complete messages.

        ``include_faults`` adds the ``message_start`` snapshots of faulty streams, which
        the CLI counts after ``truncate`` and ``malformed`` faults (see the module doc).
        """
        totals: dict[str, TokenUsage] = {}
        for served in self.served:
            partial = include_faults and served.fault is not None and not served.auxiliary
            if served.complete or partial:
                totals[served.key] = totals.get(served.key, TokenUsage()) + served.usage
        return totals

    def served_count(self, key: str) -> int:
        """Non-auxiliary responses (errors and faults included) served to ``key``."""
        return sum(1 for s in self.served if s.key == key and not s.auxiliary)

    def message_count(self, key: str) -> int:
        """Complete assistant messages served to ``key``."""
        return sum(1 for s in self.served if s.key == key and s.complete)

    # connections

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _BadRequest as exc:
                    await self._send_json(
                        writer, 400, error_body("invalid_request_error", str(exc))
                    )
                    return
                if request is None:
                    return
                if not await self._dispatch(request, writer) or not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # stop() cancels open connections (an idle keep-alive waits in readline). The
            # task must end normally: asyncio's stream callback calls task.exception() on
            # a cancelled task, which raises, and the loop logs that as an error.
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, request: _HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        if request.method == "HEAD":
            writer.write(_head(200, {"content-length": "0"}))
            await writer.drain()
            return True
        if request.method == "GET" and request.path == "/":
            return await self._send_json(writer, 200, {})
        if request.method == "POST" and request.path.rstrip("/") == "/v1/messages/count_tokens":
            return await self._count_tokens(request, writer)
        if request.method == "POST" and request.path.rstrip("/") == "/v1/messages":
            return await self._messages(request, writer)
        return await self._send_json(
            writer, 404, error_body("not_found_error", f"{request.method} {request.path}")
        )

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: JsonDict,
        extra_headers: Mapping[str, str] | None = None,
    ) -> bool:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            "request-id": "req_offline_" + uuid.uuid4().hex[:20],
            **(extra_headers or {}),
        }
        writer.write(_head(status, headers) + body)
        await writer.drain()
        return True

    # the messages endpoint

    async def _count_tokens(self, request: _HttpRequest, writer: asyncio.StreamWriter) -> bool:
        body = _json_object(request.body) or {}
        key = self._resolve_key(request, body)
        self._record_request(request, body, key, auxiliary=True)
        self._record(_served(key, -1, 200, auxiliary=True))
        return await self._send_json(writer, 200, {"input_tokens": max(1, len(request.body) // 4)})

    async def _messages(self, request: _HttpRequest, writer: asyncio.StreamWriter) -> bool:
        body = _json_object(request.body)
        if body is None:
            return await self._send_json(
                writer, 400, error_body("invalid_request_error", "body is not a JSON object")
            )
        key = self._resolve_key(request, body)
        auxiliary = _is_auxiliary(body)
        self._record_request(request, body, key, auxiliary=auxiliary)
        if auxiliary:
            index, response = -1, AUXILIARY_RESPONSE
        else:
            index = self._cursors.get(key, 0)
            self._cursors[key] = index + 1
            response = self.script.conversation(self._conversation_name(key)).response_at(index)
        if response.delay_s:
            await asyncio.sleep(response.delay_s)
        model = response.model or str(body.get("model") or DEFAULT_MODEL)
        limit = response.rate_limit
        limit_headers = limit.headers(time.time(), self._opened) if limit else {}
        error = response.effective_error
        if error is not None:
            self._record(_served(key, index, error.status, auxiliary=auxiliary))
            headers: dict[str, str] = dict(limit_headers)
            if error.should_retry is not None:
                headers["x-should-retry"] = "true" if error.should_retry else "false"
            if error.retry_after_s is not None:
                headers["retry-after"] = f"{error.retry_after_s:g}"
            return await self._send_json(
                writer, error.status, error_body(error.error_type, error.error_message), headers
            )
        message_id = new_message_id()
        self._record(
            _served(
                key,
                index,
                200,
                auxiliary=auxiliary,
                message_id=message_id,
                usage=_start_usage(response) if response.fault else _usage_of(response),
                tool_uses=tuple(tool.name for tool in response.tool_uses),
                fault=response.fault,
            )
        )
        if not body.get("stream"):
            return await self._send_json(
                writer, 200, full_message(response, message_id, model), limit_headers
            )
        return await self._stream(writer, response, message_id, model, limit_headers)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        response: Response,
        message_id: str,
        model: str,
        extra_headers: Mapping[str, str],
    ) -> bool:
        writer.write(
            _head(
                200,
                {
                    "content-type": "text/event-stream; charset=utf-8",
                    "cache-control": "no-cache",
                    "transfer-encoding": "chunked",
                    "request-id": "req_offline_" + uuid.uuid4().hex[:20],
                    **extra_headers,
                },
            )
        )
        events = list(sse_events(response, message_id, model))
        if response.fault is not None:
            # message_start, ping, the first block's start and first delta at most:
            # never message_delta or message_stop.
            events = events[: min(4, len(events) - 2)]
        for number, (event, data) in enumerate(events):
            if number and response.chunk_delay_s:
                await asyncio.sleep(response.chunk_delay_s)
            writer.write(_chunk(encode_sse(event, data)))
            await writer.drain()
        if response.fault == "disconnect":
            return False  # close the connection mid-body: a transport error
        if response.fault == "malformed":
            writer.write(_chunk(MALFORMED_EVENT))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    # keys and records

    def _resolve_key(self, request: _HttpRequest, body: JsonDict) -> str:
        header = request.headers.get(INSTANCE_HEADER, "").strip()
        if header:
            return header
        prompt = first_user_text(body)
        for name, conversation in self.script.conversations.items():
            if conversation.match is not None and conversation.match in prompt:
                return name
        return request.headers.get(SESSION_HEADER, "").strip() or "default"

    def _conversation_name(self, key: str) -> str:
        return key if key in self.script.conversations else "default"

    def _record_request(
        self, request: _HttpRequest, body: JsonDict, key: str, *, auxiliary: bool
    ) -> None:
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        last_user = _last_user_message(messages)
        result_ids = _tool_result_ids(last_user)
        max_tokens = body.get("max_tokens")
        record = RequestRecord(
            key=key,
            path=request.path,
            auxiliary=auxiliary,
            model=body.get("model") if isinstance(body.get("model"), str) else None,
            stream=bool(body.get("stream")),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            message_count=len(messages),
            last_has_tool_result=bool(result_ids),
            tool_result_ids=result_ids,
            session_id=request.headers.get(SESSION_HEADER),
            received_at=time.monotonic(),
            last_user_text=(
                _text_of(last_user.get("content")) if isinstance(last_user, dict) else ""
            ),
        )
        with self._ledger.lock:
            self._ledger.requests.append(record)

    def _record(self, served: ServedResponse) -> None:
        with self._ledger.lock:
            self._ledger.served.append(served)


def _served(
    key: str,
    index: int,
    status: int,
    *,
    auxiliary: bool,
    message_id: str | None = None,
    usage: TokenUsage = TokenUsage(),
    tool_uses: tuple[str, ...] = (),
    fault: str | None = None,
) -> ServedResponse:
    return ServedResponse(
        key, index, status, message_id, usage, tool_uses, time.monotonic(), auxiliary, fault
    )


def _json_object(data: bytes) -> JsonDict | None:
    try:
        body = json.loads(data)
    except ValueError:  # UnicodeDecodeError included
        return None
    return body if isinstance(body, dict) else None


def _is_auxiliary(body: JsonDict) -> bool:
    """Quota probes (``max_tokens`` 1) do not belong to any conversation."""
    max_tokens = body.get("max_tokens")
    return isinstance(max_tokens, int) and max_tokens <= 1


def first_user_text(body: JsonDict) -> str:
    """The text of the first user message (all its text blocks, newline-joined)."""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


def _last_user_message(messages: list[Any]) -> Any:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def _tool_result_ids(message: Any) -> tuple[str, ...]:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return ()
    return tuple(
        str(block.get("tool_use_id"))
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    )


# -------------------------------------------------------------------------- thread


class ModelServerThread:
    """A :class:`ModelServer` on its own event loop in a daemon thread, for sync code."""

    def __init__(
        self, script: Script | Mapping[str, Any], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.server = ModelServer(script)
        self._host, self._port = host, port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def start(self) -> str:
        """Start the thread and return the base URL once the server listens."""
        if self._thread is not None:
            raise RuntimeError("ModelServerThread already started")
        ready: Future[str] = Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(ready),), name="offline-model-server", daemon=True
        )
        self._thread.start()
        return ready.result()

    async def _main(self, ready: Future[str]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            url = await self.server.start(self._host, self._port)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(url)
        try:
            await self._stopping.wait()
        finally:
            await self.server.stop()

    def stop(self) -> None:
        """Stop the server and join the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join()

    def __enter__(self) -> ModelServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def served(self) -> list[ServedResponse]:
        return self.server.served

    @property
    def requests(self) -> list[RequestRecord]:
        return self.server.requests

    def usage_by_key(self, *, include_faults: bool = False) -> dict[str, TokenUsage]:
        return self.server.usage_by_key(include_faults=include_faults)

    def served_count(self, key: str) -> int:
        return self.server.served_count(key)

    def message_count(self, key: str) -> int:
        return self.server.message_count(key)


@contextlib.contextmanager
def serve_in_thread(
    script: Script | Mapping[str, Any], host: str = "127.0.0.1", port: int = 0
) -> Iterator[ModelServerThread]:
    """``with serve_in_thread(script) as server: ... server.url ...``"""
    with ModelServerThread(script, host, port) as server:
        yield server
