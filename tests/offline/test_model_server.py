"""HTTP-level tests of the offline model server with a plain loopback client."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from coordinator.offline import ModelServer, ModelServerThread, TokenUsage, serve_in_thread
from coordinator.offline.server import MALFORMED_EVENT

TOOL_SCRIPT: dict[str, Any] = {
    "conversations": {
        "alpha": {
            "responses": [
                {
                    "thinking": "Plan: write the file.",
                    "text": "Running a command and writing a file for you.",
                    "tool_uses": [
                        {
                            "name": "Bash",
                            "input": {"command": "echo hi > out.txt"},
                            "id": "toolu_x",
                        },
                        {"name": "Write", "input": {"file_path": "a.md", "content": "x" * 100}},
                    ],
                    "usage": {
                        "input_tokens": 100,
                        "output_tokens": 40,
                        "cache_creation_input_tokens": 7,
                        "cache_read_input_tokens": 3,
                    },
                },
                {"error": {"status": 529, "should_retry": True}, "repeat": 2},
                {"text": "Done.", "usage": {"input_tokens": 5, "output_tokens": 2}},
            ],
            "after": {"text": "after", "usage": {"input_tokens": 1, "output_tokens": 1}},
        },
        "beta": {"match": "MAGIC-WORD", "responses": [{"text": "beta answer"}]},
    },
    "default": {"responses": [{"text": "default answer"}]},
}


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def _body(prompt: str = "hello", **fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-test-model",
        "max_tokens": 1000,
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        **fields,
    }


def _post(
    conn: http.client.HTTPConnection,
    body: dict[str, Any],
    key: str | None = None,
    path: str = "/v1/messages?beta=true",
) -> http.client.HTTPResponse:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["X-Coordinator-Instance"] = key
    conn.request("POST", path, json.dumps(body).encode(), headers)
    return conn.getresponse()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.fixture
def server() -> Iterator[ModelServerThread]:
    with serve_in_thread(TOOL_SCRIPT) as running:
        yield running


@pytest.fixture
def conn(server: ModelServerThread) -> Iterator[http.client.HTTPConnection]:
    connection = _connection(server.url)
    yield connection
    connection.close()


def test_head_get_and_unknown_paths(conn: http.client.HTTPConnection) -> None:
    for path in ("/", "/api/hello"):
        conn.request("HEAD", path)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b""
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    conn.request("GET", "/v1/models")
    response = conn.getresponse()
    assert response.status == 404
    assert json.loads(response.read())["error"]["type"] == "not_found_error"


def test_stream_event_order_usage_and_blocks(
    server: ModelServerThread, conn: http.client.HTTPConnection
) -> None:
    response = _post(conn, _body(), key="alpha")
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    events = _events(response.read())
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)

    start = events[0][1]["message"]
    assert start["id"].startswith("msg_")
    assert start["model"] == "claude-test-model"
    assert start["usage"] == {
        "input_tokens": 100,
        "output_tokens": 1,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }
    delta = events[-2][1]
    assert delta["usage"] == {  # cumulative counts, no split (the API's MessageDeltaUsage)
        "input_tokens": 100,
        "output_tokens": 40,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 3,
    }
    assert delta["delta"]["stop_reason"] == "tool_use"

    blocks: dict[int, dict[str, Any]] = {}
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks[data["index"]] = {**data["content_block"], "deltas": [], "stopped": False}
        elif name == "content_block_delta":
            blocks[data["index"]]["deltas"].append(data["delta"])
        elif name == "content_block_stop":
            blocks[data["index"]]["stopped"] = True
    assert [b["type"] for b in blocks.values()] == ["thinking", "text", "tool_use", "tool_use"]
    assert all(b["stopped"] for b in blocks.values())
    thinking, text, bash, write = blocks.values()
    assert "".join(d.get("thinking", "") for d in thinking["deltas"]) == "Plan: write the file."
    assert thinking["deltas"][-1]["type"] == "signature_delta"
    assert (
        "".join(d["text"] for d in text["deltas"])
        == TOOL_SCRIPT["conversations"]["alpha"]["responses"][0]["text"]
    )
    assert len(text["deltas"]) > 1
    assert bash["id"] == "toolu_x" and bash["name"] == "Bash"
    assert json.loads("".join(d["partial_json"] for d in bash["deltas"])) == {
        "command": "echo hi > out.txt"
    }
    assert write["id"].startswith("toolu_") and write["id"] != bash["id"]
    assert json.loads("".join(d["partial_json"] for d in write["deltas"]))["content"] == "x" * 100

    (served,) = server.served
    assert served.key == "alpha" and served.index == 0 and served.status == 200
    assert served.message_id == start["id"]
    assert served.tool_uses == ("Bash", "Write")
    assert served.usage == TokenUsage(100, 40, 7, 3)


def test_cursor_advances_through_errors_then_after(
    server: ModelServerThread, conn: http.client.HTTPConnection
) -> None:
    statuses = []
    for _ in range(6):
        response = _post(conn, _body(), key="alpha")  # one keep-alive connection
        payload = response.read()
        statuses.append(response.status)
        if response.status == 529:
            assert response.getheader("x-should-retry") == "true"
            assert json.loads(payload) == {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "offline scripted error 529"},
            }
    assert statuses == [200, 529, 529, 200, 200, 200]
    assert [s.index for s in server.served] == [0, 1, 2, 3, 4, 5]
    assert server.served_count("alpha") == 6
    assert server.message_count("alpha") == 4
    assert server.usage_by_key() == {"alpha": TokenUsage(100 + 5 + 1 + 1, 40 + 2 + 1 + 1, 7, 3)}
    ids = [s.message_id for s in server.served if s.message_id]
    assert len(set(ids)) == 4


def test_keys_header_match_session_and_default(
    server: ModelServerThread, conn: http.client.HTTPConnection
) -> None:
    def text_of(response: http.client.HTTPResponse) -> str:
        return "".join(
            d["delta"].get("text", "")
            for name, d in _events(response.read())
            if name == "content_block_delta"
        )

    assert text_of(_post(conn, _body("say MAGIC-WORD please"))) == "beta answer"
    assert text_of(_post(conn, _body("hello"), key="stranger")) == "default answer"
    assert text_of(_post(conn, _body("hello"), key="stranger")) == "Done."  # default after
    assert text_of(_post(conn, _body("hello"))) == "default answer"  # key "default"
    conn.request(
        "POST",
        "/v1/messages",
        json.dumps(_body()).encode(),
        {"X-Claude-Code-Session-Id": "sess-1"},
    )
    assert text_of(conn.getresponse()) == "default answer"
    assert [s.key for s in server.served] == ["beta", "stranger", "stranger", "default", "sess-1"]
    # the header wins over a match
    assert text_of(_post(conn, _body("MAGIC-WORD"), key="alpha")).startswith("Running")


def test_auxiliary_requests_do_not_move_cursors(
    server: ModelServerThread, conn: http.client.HTTPConnection
) -> None:
    probe = _post(conn, _body(max_tokens=1, stream=False), key="alpha")
    assert probe.status == 200
    assert json.loads(probe.read())["type"] == "message"
    counted = _post(conn, _body(), key="alpha", path="/v1/messages/count_tokens")
    assert counted.status == 200
    assert json.loads(counted.read())["input_tokens"] > 0
    assert server.served_count("alpha") == 0
    assert all(s.auxiliary and s.index == -1 for s in server.served)
    assert server.usage_by_key() == {}
    first = _post(conn, _body(), key="alpha")
    first.read()
    assert server.served[-1].index == 0
    assert [r.auxiliary for r in server.requests] == [True, True, False]


def test_non_streaming_request_gets_whole_message(conn: http.client.HTTPConnection) -> None:
    response = _post(conn, _body(stream=False), key="alpha")
    assert response.status == 200
    message = json.loads(response.read())
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert message["content"][2]["input"] == {"command": "echo hi > out.txt"}
    assert message["usage"]["output_tokens"] == 40


def test_request_summary_sees_tool_results(
    server: ModelServerThread, conn: http.client.HTTPConnection
) -> None:
    body = _body()
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ""}]},
        {"role": "system", "content": "environment"},
    ]
    _post(conn, body, key="alpha").read()
    (request,) = server.requests
    assert request.message_count == 4
    assert request.last_has_tool_result and request.tool_result_ids == ("t1",)
    assert request.model == "claude-test-model" and request.stream and request.max_tokens == 1000


def test_bad_bodies_get_400(server: ModelServerThread, conn: http.client.HTTPConnection) -> None:
    conn.request("POST", "/v1/messages", b"{not json", {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["error"]["type"] == "invalid_request_error"
    assert server.served == []


def test_chunked_request_body(server: ModelServerThread, conn: http.client.HTTPConnection) -> None:
    payload = json.dumps(_body()).encode()
    conn.request(
        "POST",
        "/v1/messages",
        iter([payload[:10], payload[10:]]),
        {"X-Coordinator-Instance": "alpha"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    assert server.served[0].key == "alpha"


@pytest.mark.parametrize("fault", ["truncate", "malformed", "disconnect"])
def test_faults(fault: str) -> None:
    script = {
        "default": {
            "responses": [
                {"text": "a long enough text to be split in chunks", "fault": fault},
                {"text": "fine", "usage": {"input_tokens": 3, "output_tokens": 2}},
            ]
        }
    }
    with serve_in_thread(script) as server:
        conn = _connection(server.url)
        response = _post(conn, _body(), key="k")
        assert response.status == 200
        if fault == "disconnect":
            with pytest.raises(http.client.IncompleteRead):
                response.read()
            conn.close()
        else:
            raw = response.read()  # a complete chunked body
            if fault == "malformed":
                assert raw.endswith(MALFORMED_EVENT)
                raw = raw[: -len(MALFORMED_EVENT)]
            names = [n for n, _ in _events(raw)]
            assert names == ["message_start", "ping", "content_block_start", "content_block_delta"]
        second = _post(conn, _body(), key="k")  # the connection stays usable unless cut
        assert second.status == 200
        second.read()
        conn.close()
        first = server.served[0]
        assert first.fault == fault and not first.complete
        assert first.usage == TokenUsage(10, 1, 0, 0)  # the message_start snapshot
        assert server.usage_by_key() == {"k": TokenUsage(3, 2, 0, 0)}
        assert server.usage_by_key(include_faults=True) == {"k": TokenUsage(13, 3, 0, 0)}


def test_fault_without_content_never_sends_message_delta() -> None:
    with serve_in_thread({"default": {"responses": [{"fault": "truncate"}]}}) as server:
        conn = _connection(server.url)
        names = [n for n, _ in _events(_post(conn, _body(), key="k").read())]
        conn.close()
    assert names == ["message_start", "ping"]


async def test_async_server_stops_with_idle_keep_alive_connection() -> None:
    async with ModelServer({"default": {"responses": [{"text": "hi"}]}}) as server:
        parts = urlsplit(server.url)
        assert parts.hostname is not None and parts.port is not None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        payload = json.dumps(_body(stream=False)).encode()
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Coordinator-Instance: z\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        assert json.loads(await reader.readexactly(length))["content"][0]["text"] == "hi"
    # stop() closed the idle keep-alive connection from the server side
    assert await reader.read() == b""
    writer.close()
    assert server.served_count("z") == 1


def _idle_keep_alive(url: str) -> socket.socket:
    """A connection that had one answer and now waits, open, for its next request."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


async def test_stop_with_idle_keep_alive_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with ModelServer({"default": {"responses": [{"text": "hi"}]}}) as server:
        sock = await asyncio.to_thread(_idle_keep_alive, server.url)
        await asyncio.sleep(0)  # let the server task reach its wait for the next request
    await asyncio.sleep(0)  # the stream protocol's done-callback runs on the next turn
    try:
        assert await asyncio.to_thread(sock.recv, 1) == b""  # closed by stop()
    finally:
        sock.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_main_stops_silently_with_idle_keep_alive(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"default": {"responses": [{"text": "x"}]}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.offline", "--script", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        sock = _idle_keep_alive(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        sock.close()
        assert (proc.returncode, stderr) == (0, "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_delay_before_headers() -> None:
    script = {"default": {"responses": [{"text": "slow", "delay_s": 0.2, "chunk_delay_s": 0.01}]}}
    with serve_in_thread(script) as server:
        conn = _connection(server.url)
        began = time.monotonic()
        response = _post(conn, _body(), key="k")
        response.read()
        assert time.monotonic() - began >= 0.2
        conn.close()


def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"default": {"responses": [{"text": "from main"}]}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.offline", "--script", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        conn = _connection(url)
        response = _post(conn, _body(stream=False), key="m")
        assert json.loads(response.read())["content"][0]["text"] == "from main"
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "raw",
    [
        b"NONSENSE\r\n\r\n",
        # a header line over asyncio's 64 KiB limit (small enough to be read whole)
        b"POST /v1/messages HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
    ],
    ids=["request-line", "header-too-long", "bad-gzip"],
)
def test_malformed_http_gets_400_and_close(server: ModelServerThread, raw: bytes) -> None:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert server.served == []


def test_gzip_request_body(server: ModelServerThread, conn: http.client.HTTPConnection) -> None:
    payload = gzip.compress(json.dumps(_body(stream=False)).encode())
    conn.request(
        "POST",
        "/v1/messages",
        payload,
        {"Content-Encoding": "gzip", "X-Coordinator-Instance": "alpha"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["stop_reason"] == "tool_use"


def test_rate_limit_headers_on_200_and_rejected_429() -> None:
    script = {
        "default": {
            "responses": [
                {"text": "ok", "rate_limit": {"status": "allowed_warning", "resets_in_s": 60}},
                {"rate_limit": {"status": "rejected", "resets_in_s": 120, "type": "seven_day"}},
                {"text": "plain"},
            ]
        }
    }
    with serve_in_thread(script) as server:
        connection = _connection(server.url)
        try:
            before = time.time()
            ok = _post(connection, _body())
            ok.read()
            assert ok.status == 200
            assert ok.getheader("anthropic-ratelimit-unified-status") == "allowed_warning"
            reset = int(ok.getheader("anthropic-ratelimit-unified-reset") or 0)
            assert round(before) + 60 <= reset <= round(time.time()) + 60
            assert ok.getheader("anthropic-ratelimit-unified-5h-surpassed-threshold") == "0.75"

            rejected = _post(connection, _body(stream=False))
            body = json.loads(rejected.read())
            assert rejected.status == 429
            assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
            assert rejected.getheader("anthropic-ratelimit-unified-status") == "rejected"
            assert rejected.getheader("anthropic-ratelimit-unified-representative-claim") == (
                "seven_day"
            )
            assert rejected.getheader("anthropic-ratelimit-unified-7d-status") == "rejected"

            plain = _post(connection, _body())
            plain.read()
            assert plain.getheader("anthropic-ratelimit-unified-status") is None
        finally:
            connection.close()
    assert [s.status for s in server.served] == [200, 429, 200]
    assert server.usage_by_key()["default"].total == 30  # the 429 served no tokens
