"""The real pinned claude CLI against the offline model server, end to end.

Each run is a real ``claude -p`` process in its own process group, with a temporary HOME
and workspace, talking only to the loopback server. The tests pin the CLI facts that the
server's module docstring states.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from coordinator.offline import ModelServerThread, TokenUsage, serve_in_thread
from tests.offline.conftest import ClaudeRun, RunClaude

pytestmark = pytest.mark.claude


def _usage(result: dict[str, Any]) -> TokenUsage:
    usage = result["usage"]
    return TokenUsage(
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_creation_input_tokens"],
        usage["cache_read_input_tokens"],
    )


def _tool_script(file_name: str, marker: str) -> dict[str, Any]:
    return {
        "responses": [
            {
                "thinking": "I should create the files.",
                "text": "Creating the files.",
                "tool_uses": [{"name": "Bash", "input": {"command": f"echo hi > {file_name}"}}],
                "usage": {
                    "input_tokens": 1200,
                    "output_tokens": 45,
                    "cache_creation_input_tokens": 3000,
                    "cache_read_input_tokens": 0,
                },
            },
            {
                "tool_uses": [
                    {"name": "Write", "input": {"file_path": "notes.md", "content": marker}}
                ],
                "usage": {
                    "input_tokens": 80,
                    "output_tokens": 60,
                    "cache_creation_input_tokens": 150,
                    "cache_read_input_tokens": 3000,
                },
            },
            {
                "text": "Both files are written.",
                "usage": {
                    "input_tokens": 40,
                    "output_tokens": 9,
                    "cache_creation_input_tokens": 90,
                    "cache_read_input_tokens": 3150,
                },
            },
        ]
    }


def _assert_matches_ground_truth(
    run: ClaudeRun, server: ModelServerThread, key: str, *, include_faults: bool = False
) -> None:
    result = run.result
    assert result["subtype"] == "success" and result["is_error"] is False, run.stderr
    assert _usage(result) == server.usage_by_key(include_faults=include_faults)[key]
    assert result["num_turns"] == server.message_count(key)
    served_ids = [s.message_id for s in server.served if s.key == key and s.complete]
    assistant_ids = list(dict.fromkeys(e["message"]["id"] for e in run.of("assistant")))
    assert assistant_ids == served_ids


def test_tools_really_run_and_usage_matches_exactly(run_claude: RunClaude) -> None:
    with serve_in_thread(
        {"conversations": {"alpha": _tool_script("out.txt", "marker-1\n")}}
    ) as server:
        run = run_claude(server.url, key="alpha")

    assert run.returncode == 0, run.stderr
    assert (run.workspace / "out.txt").read_text() == "hi\n"
    assert (run.workspace / "notes.md").read_text() == "marker-1\n"
    _assert_matches_ground_truth(run, server, "alpha")
    assert server.usage_by_key()["alpha"] == TokenUsage(1320, 114, 3240, 6150)
    assert run.result["num_turns"] == 3

    # The custom header was forwarded on every request, and tool results came back.
    requests = server.requests
    assert [r.key for r in requests] == ["alpha"] * 3
    assert [r.last_has_tool_result for r in requests] == [False, True, True]
    assert all(r.session_id == run.session_id and r.stream for r in requests)
    tool_results = [
        block
        for event in run.of("user")
        for block in event["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    assert [b["tool_use_id"] for b in tool_results] == [
        i for r in requests for i in r.tool_result_ids
    ]
    assert not any(b.get("is_error") for b in tool_results)

    # Live accounting: each message_delta stream event carries that message's final output.
    deltas = [
        e["event"]["usage"]["output_tokens"]
        for e in run.of("stream_event")
        if e["event"]["type"] == "message_delta"
    ]
    assert deltas == [s.usage.output_tokens for s in server.served]


def test_parallel_instances_are_told_apart_by_header(run_claude: RunClaude) -> None:
    script = {
        "conversations": {
            "one": _tool_script("one.txt", "first\n"),
            "two": _tool_script("two.txt", "second\n"),
        }
    }
    with serve_in_thread(script) as server, ThreadPoolExecutor(2) as pool:
        runs = dict(
            zip(
                ("one", "two"),
                pool.map(lambda k: run_claude(server.url, key=k), ("one", "two")),
                strict=True,
            )
        )

    for key, run in runs.items():
        assert (run.workspace / f"{key}.txt").exists()
        _assert_matches_ground_truth(run, server, key)
    assert {r.session_id for r in server.requests if r.key == "one"} == {runs["one"].session_id}


def test_prompt_match_without_header(run_claude: RunClaude) -> None:
    script = {
        "conversations": {
            "matched": {
                "match": "TICKET-42",
                "responses": [{"text": "On it.", "usage": {"input_tokens": 7, "output_tokens": 3}}],
            }
        }
    }
    with serve_in_thread(script) as server:
        run = run_claude(server.url, "Please handle TICKET-42 now.")
    _assert_matches_ground_truth(run, server, "matched")
    assert run.result["result"] == "On it."


def test_overloaded_storm_then_success(run_claude: RunClaude) -> None:
    script = {
        "conversations": {
            "storm": {
                "responses": [
                    {"error": {"status": 529}, "repeat": 2},
                    {"text": "Recovered.", "usage": {"input_tokens": 30, "output_tokens": 4}},
                ]
            }
        }
    }
    with serve_in_thread(script) as server:
        run = run_claude(server.url, key="storm")
    retries = run.of("system", "api_retry")
    assert [(r["attempt"], r["error_status"], r["error"]) for r in retries] == [
        (1, 529, "overloaded"),
        (2, 529, "overloaded"),
    ]
    assert [s.status for s in server.served] == [529, 529, 200]
    _assert_matches_ground_truth(run, server, "storm")
    assert run.result["num_turns"] == 1


def test_401_with_should_retry_false_fails_at_once(run_claude: RunClaude) -> None:
    script = {
        "conversations": {
            "bad-key": {"responses": [{"error": {"status": 401, "should_retry": False}}]}
        }
    }
    with serve_in_thread(script) as server:
        run = run_claude(server.url, key="bad-key")
    assert run.returncode == 1
    assert run.of("system", "api_retry") == []
    result = run.result
    assert result["is_error"] is True and result["api_error_status"] == 401
    assert result["terminal_reason"] == "api_error"
    assert _usage(result) == TokenUsage()
    assert server.served_count("bad-key") == 1
    assert server.usage_by_key() == {}


def test_401_is_retried_like_other_errors(run_claude: RunClaude) -> None:
    # By default the CLI retries a 401 ten times with backoff (minutes); cap it at one.
    script = {
        "conversations": {"bad-key": {"responses": [{"error": {"status": 401}, "repeat": 5}]}}
    }
    with serve_in_thread(script) as server:
        run = run_claude(server.url, key="bad-key", env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    assert run.returncode == 1
    retries = run.of("system", "api_retry")
    assert [(r["attempt"], r["max_retries"], r["error_status"], r["error"]) for r in retries] == [
        (1, 1, 401, "authentication_failed")
    ]
    assert run.result["is_error"] is True and run.result["api_error_status"] == 401
    assert server.served_count("bad-key") == 2


def _fault_script(fault: str) -> dict[str, Any]:
    return {
        "conversations": {
            fault: {
                "responses": [
                    {
                        "text": "This answer breaks off midway.",
                        "fault": fault,
                        "usage": {"input_tokens": 500, "output_tokens": 50},
                    },
                    {"text": "Whole answer.", "usage": {"input_tokens": 60, "output_tokens": 6}},
                ]
            }
        }
    }


def test_truncated_stream_is_retried_and_partial_counted(run_claude: RunClaude) -> None:
    with serve_in_thread(_fault_script("truncate")) as server:
        run = run_claude(server.url, key="truncate")
    assert [r["error_status"] for r in run.of("system", "api_retry")] == [None]
    assert [r.stream for r in server.requests] == [True, True]
    _assert_matches_ground_truth(run, server, "truncate", include_faults=True)
    assert _usage(run.result) == TokenUsage(560, 7, 0, 0)


def test_disconnect_is_retried_and_partial_maybe_counted(run_claude: RunClaude) -> None:
    with serve_in_thread(_fault_script("disconnect")) as server:
        run = run_claude(server.url, key="disconnect")
    assert [r["error_status"] for r in run.of("system", "api_retry")] == [None]
    assert run.result["result"] == "Whole answer."
    # A race inside the CLI: the partial counts only if it was read before the reset.
    assert _usage(run.result) in (
        server.usage_by_key()["disconnect"],
        server.usage_by_key(include_faults=True)["disconnect"],
    )


def test_malformed_stream_falls_back_and_counts_partial(run_claude: RunClaude) -> None:
    with serve_in_thread(_fault_script("malformed")) as server:
        run = run_claude(server.url, key="malformed")
    assert run.of("system", "api_retry") == []
    assert "Could not parse message into JSON" in run.stderr
    assert [r.stream for r in server.requests] == [True, False]  # non-streaming fallback
    _assert_matches_ground_truth(run, server, "malformed", include_faults=True)
    assert _usage(run.result) == TokenUsage(560, 7, 0, 0)


def test_cache_creation_split_reaches_stream_and_transcript(run_claude: RunClaude) -> None:
    """The CLI copies the API's ``cache_creation`` split into its stream and transcript,
    and sums it in ``result.usage``: without it the transcript holds zeros there."""
    split = {"ephemeral_5m_input_tokens": 180, "ephemeral_1h_input_tokens": 120}
    script = {
        "conversations": {
            "c": {
                "responses": [
                    {
                        "tool_uses": [{"name": "Bash", "input": {"command": "true"}}],
                        "usage": {
                            "input_tokens": 10,
                            "output_tokens": 4,
                            "cache_creation_input_tokens": 300,
                            "cache_creation": split,
                        },
                    },
                    {  # no split given: all of it is a 5-minute write
                        "text": "done",
                        "usage": {
                            "input_tokens": 5,
                            "output_tokens": 2,
                            "cache_creation_input_tokens": 40,
                            "cache_read_input_tokens": 300,
                        },
                    },
                ]
            }
        }
    }
    with serve_in_thread(script) as server:
        run = run_claude(server.url, key="c")
    _assert_matches_ground_truth(run, server, "c")
    expected = [split, {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 0}]
    streamed = {
        e["message"]["id"]: e["message"]["usage"]["cache_creation"] for e in run.of("assistant")
    }
    assert list(streamed.values()) == expected
    assert run.result["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 220,
        "ephemeral_1h_input_tokens": 120,
    }
    [transcript] = (run.workspace.parent / "home" / ".claude" / "projects").glob(
        f"*/{run.session_id}.jsonl"
    )
    written: dict[str, Any] = {}
    for line in transcript.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "assistant":
            written[entry["message"]["id"]] = entry["message"]["usage"]
    assert [u["cache_creation"] for u in written.values()] == expected
    assert [u["cache_creation_input_tokens"] for u in written.values()] == [300, 40]
