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
