"""Validation and semantics of the offline model script format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.errors import ConfigError
from coordinator.offline.script import DEFAULT_AFTER, ApiError, Response, load_script


def test_minimal_script_and_defaults() -> None:
    script = load_script({"conversations": {"a": {"responses": [{"text": "hi"}]}}})
    response = script.conversation("a").response_at(0)
    assert response.text == "hi"
    assert response.effective_stop_reason == "end_turn"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.model is None  # the server echoes the requested model


def test_tool_uses_default_to_tool_use_stop_reason() -> None:
    response = Response.model_validate(
        {"tool_uses": [{"name": "Bash", "input": {"command": "ls"}}]}
    )
    assert response.effective_stop_reason == "tool_use"
    explicit = Response.model_validate(
        {"tool_uses": [{"name": "Bash"}], "stop_reason": "max_tokens"}
    )
    assert explicit.effective_stop_reason == "max_tokens"


def test_repeat_expands_and_after_follows() -> None:
    script = load_script(
        {
            "conversations": {
                "a": {
                    "responses": [
                        {"error": {"status": 529}, "repeat": 3},
                        {"text": "ok"},
                    ],
                    "after": {"text": "bye"},
                }
            }
        }
    )
    conversation = script.conversation("a")
    assert conversation.scripted_count == 4
    statuses = [
        r.error.status if r.error else r.text for r in map(conversation.response_at, range(6))
    ]
    assert statuses == [529, 529, 529, "ok", "bye", "bye"]


def test_unknown_key_plays_default_and_default_after_ends_turn() -> None:
    script = load_script({"default": {"responses": [{"text": "d"}]}})
    assert script.conversation("nobody").response_at(0).text == "d"
    assert script.conversation("nobody").response_at(1) == DEFAULT_AFTER
    assert DEFAULT_AFTER.effective_stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
        (503, "api_error"),
        (418, "invalid_request_error"),
    ],
)
def test_error_type_follows_status(status: int, expected: str) -> None:
    assert ApiError(status=status).error_type == expected
    assert ApiError(status=status, type="custom").error_type == "custom"


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (
            {"conversations": {"a": {"responses": [{"txet": "x"}]}}},
            "conversations.a.responses.0.txet",
            "Extra inputs",
        ),
        (
            {"conversations": {"a": {"responses": [{"error": {"status": 200}}]}}},
            "conversations.a.responses.0.error.status",
            "greater than or equal to 400",
        ),
        (
            {"conversations": {"a": {"responses": [{"error": {"status": 500}, "text": "x"}]}}},
            "conversations.a.responses.0",
            "cannot also have text",
        ),
        (
            {"default": {"responses": [{"fault": "explode"}]}},
            "default.responses.0.fault",
            "'truncate', 'malformed' or 'disconnect'",
        ),
        ({"default": {"responses": [{"repeat": 0}]}}, "default.responses.0.repeat", "greater"),
        (
            {"default": {"responses": [{"usage": {"input_tokens": -1}}]}},
            "default.responses.0.usage.input_tokens",
            "greater",
        ),
        (
            {"default": {"responses": [{"tool_uses": [{"input": {}}]}]}},
            "default.responses.0.tool_uses.0.name",
            "Field required",
        ),
        ({"extra": 1}, "extra", "Extra inputs"),
        (
            {
                "default": {
                    "responses": [
                        {
                            "usage": {
                                "cache_creation_input_tokens": 10,
                                "cache_creation": {
                                    "ephemeral_5m_input_tokens": 4,
                                    "ephemeral_1h_input_tokens": 5,
                                },
                            }
                        }
                    ]
                }
            },
            "default.responses.0.usage",
            "4 + ephemeral_1h_input_tokens 5 != cache_creation_input_tokens 10",
        ),
        (
            {
                "default": {
                    "responses": [
                        {
                            "usage": {
                                "cache_creation_input_tokens": 10,
                                "cache_creation": {"ephemeral_1h_input_tokens": 11},
                            }
                        }
                    ]
                }
            },
            "default.responses.0.usage",
            "larger than cache_creation_input_tokens 10",
        ),
        (
            {"default": {"responses": [{"usage": {"cache_creation": {"ephemeral_5m": 1}}}]}},
            "default.responses.0.usage.cache_creation.ephemeral_5m",
            "Extra inputs",
        ),
    ],
)
def test_invalid_scripts_name_the_field(data: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_script(data, name="s.json")
    assert caught.value.file == "s.json"
    assert caught.value.path == path
    assert fragment in caught.value.problem
    assert "\n" not in str(caught.value)


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"default": {"responses": [{"text": "from file"}]}}))
    assert load_script(path).default.responses[0].text == "from file"


def test_invalid_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"default": {"responses": [}\n')
    with pytest.raises(ConfigError) as caught:
        load_script(path)
    assert str(path) in str(caught.value)
    assert "line 1 column" in str(caught.value)
    assert caught.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_script(tmp_path / "absent.json")


def test_main_rejects_bad_script_with_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"conversations": {"a": {"responses": [{"stop_reason": "nope"}]}}}))
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.offline", "--script", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert "conversations.a.responses.0.stop_reason" in lines[0]


# ------------------------------------------------------------------ rate limits


def test_rate_limit_headers_are_relative_to_the_answer() -> None:
    from coordinator.offline.script import RateLimit

    limit = RateLimit(status="allowed", resets_in_s=600, utilization_5h=0.3, utilization_7d=0.1)
    headers = limit.headers(1000.0)
    prefix = "anthropic-ratelimit-unified-"
    assert headers == {
        prefix + "status": "allowed",
        prefix + "reset": "1600",
        prefix + "representative-claim": "five_hour",
        prefix + "fallback": "unavailable",
        prefix + "5h-utilization": "0.3",
        prefix + "5h-reset": "1600",
        prefix + "5h-status": "allowed",
        prefix + "7d-utilization": "0.1",
        prefix + "7d-reset": str(1000 + 7 * 24 * 3600),
        prefix + "7d-status": "allowed",
    }
    assert limit.headers(2000.0)[prefix + "reset"] == "2600"  # scripts stay reusable
    # the other window opened once: its reset does not move from one answer to the next
    later = limit.headers(1001.0, opened=1000.0)
    assert later[prefix + "7d-reset"] == headers[prefix + "7d-reset"]
    assert RateLimit(resets_at=5000).headers(1000.0)[prefix + "reset"] == "5000"
    assert RateLimit().headers(0.0)[prefix + "reset"] == str(5 * 3600)


def test_warning_sends_the_window_threshold_and_overage() -> None:
    from coordinator.offline.script import RateLimit

    prefix = "anthropic-ratelimit-unified-"
    warning = RateLimit(status="allowed_warning", type="seven_day", utilization_7d=0.8)
    headers = warning.headers(0.0)
    assert headers[prefix + "7d-status"] == "allowed_warning"
    assert headers[prefix + "7d-surpassed-threshold"] == "0.8"
    assert prefix + "5h-status" not in headers  # no utilization, not representative
    explicit = RateLimit(status="allowed_warning", surpassed_threshold=0.5).headers(0.0)
    assert explicit[prefix + "5h-surpassed-threshold"] == "0.5"
    assert RateLimit(status="allowed_warning").headers(0.0)[prefix + "5h-surpassed-threshold"] == (
        "0.75"
    )
    overage = RateLimit(
        status="rejected", overage_status="rejected", overage_disabled_reason="out_of_credits"
    ).headers(0.0)
    assert overage[prefix + "overage-status"] == "rejected"
    assert overage[prefix + "overage-disabled-reason"] == "out_of_credits"


def test_rejected_rate_limit_is_a_429_error() -> None:
    response = Response.model_validate({"rate_limit": {"status": "rejected"}})
    assert response.rejected
    error = response.effective_error
    assert error is not None and (error.status, error.error_type) == (429, "rate_limit_error")
    custom = Response.model_validate(
        {"rate_limit": {"status": "rejected"}, "error": {"status": 429, "should_retry": False}}
    )
    assert custom.effective_error is not None and custom.effective_error.should_retry is False
    allowed = Response.model_validate({"text": "x", "rate_limit": {"status": "allowed"}})
    assert not allowed.rejected and allowed.effective_error is None


@pytest.mark.parametrize(
    ("rate_limit", "extra", "at", "fragment"),
    [
        ({"status": "rejected"}, {"text": "x"}, "", "a rejected rate_limit response cannot"),
        ({"status": "rejected"}, {"error": {"status": 529}}, "", "must be 429"),
        ({"status": "blocked"}, {}, ".rate_limit.status", "Input should be"),
        ({"utilization_5h": 1.5}, {}, ".rate_limit.utilization_5h", "less than or equal to 1"),
        ({"resets_in_s": 5, "resets_at": 9}, {}, ".rate_limit", "not both"),
        ({"colour": "red"}, {}, ".rate_limit.colour", "Extra inputs"),
    ],
)
def test_invalid_rate_limits_name_the_field(
    rate_limit: dict[str, Any], extra: dict[str, Any], at: str, fragment: str
) -> None:
    data = {"default": {"responses": [{"rate_limit": rate_limit, **extra}]}}
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_script(data)
    assert f"default.responses.0{at}" in str(caught.value)


def test_rejected_paid_by_overage_is_served() -> None:
    paid = Response.model_validate(
        {"text": "x", "rate_limit": {"status": "rejected", "overage_status": "allowed"}}
    )
    assert not paid.rejected and paid.effective_error is None


@pytest.mark.parametrize(
    ("usage", "total", "split"),
    [
        ({"cache_creation_input_tokens": 30}, 30, (30, 0)),  # default: all 5-minute
        ({"cache_creation_input_tokens": 30, "cache_creation": {}}, 30, (30, 0)),
        (
            {"cache_creation_input_tokens": 30, "cache_creation": {"ephemeral_1h_input_tokens": 8}},
            30,
            (22, 8),
        ),
        (
            {"cache_creation_input_tokens": 30, "cache_creation": {"ephemeral_5m_input_tokens": 8}},
            30,
            (8, 22),
        ),
        (  # the split alone sets the total
            {"cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}},
            7,
            (3, 4),
        ),
    ],
)
def test_cache_creation_split(usage: dict[str, Any], total: int, split: tuple[int, int]) -> None:
    script = load_script({"default": {"responses": [{"usage": usage}]}})
    parsed = script.conversation("default").response_at(0).usage
    assert (parsed.cache_creation_input_tokens, parsed.cache_split) == (total, split)
