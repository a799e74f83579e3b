"""Strict input: every bad value in a config, a flag, the environment or ``.env`` is one
line on stderr naming the file, field or variable and the value, exit 2, no traceback, and
nothing launched. Before, each of these was silently coerced, ignored, or a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults.bad_input import Sandbox, assert_refused

GO = {"command": "go", "name": "a"}
UUID = "0b7c8a52-54c4-4d53-9d5f-3a3c2f1e0d9a"


def cfg(orchestration: dict[str, Any] | None = None, **instance: Any) -> dict[str, Any]:
    return {"orchestration": orchestration or {}, "instances": [{**GO, **instance}]}


CONFIGS: list[tuple[str, Any, list[str]]] = [
    ("string for seconds", cfg({"timeout": "30"}), ["orchestration.timeout = '30'"]),
    ("bool for seconds", cfg({"startup_delay": True}), ["orchestration.startup_delay = True"]),
    ("int for a bool", cfg(resume=1, session_id="s"), ["instances[0].resume = 1"]),
    ("string for a bool", cfg(clear_history="yes"), ["instances[0].clear_history = 'yes'"]),
    ("bool for an int", cfg(max_turns=True), ["instances[0].max_turns = True"]),
    ("float for an int", cfg(max_tokens_per_command=5.0), ["max_tokens_per_command = 5.0"]),
    (
        "string for tokens",
        cfg({"budget": {"overall_tokens": "1000"}}),
        ["orchestration.budget.overall_tokens = '1000'"],
    ),
    (
        "int beyond 64 bits",
        cfg(max_tokens_per_command=2**70),
        [f"max_tokens_per_command = {2**70}", "9223372036854775807"],
    ),
    ("escape in a name", cfg(name="a\x1b[31mb"), ["instances[0].name", "U+001B"]),
    ("newline in a name", cfg(name="a\nb"), ["instances[0].name", "U+000A"]),
    ("bidi override in a name", cfg(name="a\u202eb"), ["instances[0].name", "U+202E"]),
    ("blank name", cfg(name="   "), ["instances[0].name = '   '", "blank"]),
    ("newline in a session id", cfg(session_id="s\n"), ["instances[0].session_id = 's\\n'"]),
    (
        "one session name on two instances (in one workspace)",
        {
            "instances": [
                {"command": "go", "name": "a", "session_id": "x"},
                {"command": "go", "name": "b", "session_id": "x"},
            ]
        },
        ["instances[1].session_id = 'x'", "instances[0] (a)", "share a session"],
    ),
    (
        "one UUID in two spellings",
        {
            "instances": [
                {"command": "go", "name": "a", "session_id": UUID},
                {"command": "go", "name": "b", "session_id": UUID.upper()},
            ]
        },
        ["instances[1].session_id", UUID, "share a session"],
    ),
]


@pytest.mark.parametrize(("case", "config", "fragments"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bad_config_values(
    tmp_path: Path, case: str, config: dict[str, Any], fragments: list[str]
) -> None:
    box = Sandbox(tmp_path)
    path = box.config(config)
    for args in (["--dry-run"], ["run", "--no-db"]):
        assert_refused(box.run(*args, "--config", str(path)), str(path), *fragments)
    assert not box.marker.exists()


RAW_CONFIGS: list[tuple[str, bytes, list[str]]] = [
    (
        "duplicate key",
        b'{"instances": [{"command": "go"}],\n "instances": [{"command": "rm"}]}',
        ["duplicate key 'instances'"],
    ),
    (
        "duplicate key in an instance",
        b'{"instances": [{"command": "go", "name": "a", "name": "b"}]}',
        ["duplicate key 'name'"],
    ),
    (
        "Latin-1 byte on line 3",
        b'{"instances": [\n  {"command": "go",\n   "name": "caf\xe9"}]}',
        ["line 3 column 16", "not UTF-8", "0xe9"],
    ),
    (
        "bigger than any config",
        json.dumps({"instances": [GO]}).encode() + b" " * (17 << 20),
        ["larger than 16 MiB"],
    ),
]


@pytest.mark.parametrize(("case", "raw", "fragments"), RAW_CONFIGS, ids=[c[0] for c in RAW_CONFIGS])
def test_bad_config_bytes(tmp_path: Path, case: str, raw: bytes, fragments: list[str]) -> None:
    box = Sandbox(tmp_path)
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    assert_refused(box.run("run", "--no-db", "--config", str(path)), str(path), *fragments)
    assert not box.marker.exists()


FLAGS: list[tuple[list[str], list[str]]] = [
    (["--timeout", "nan"], ["--timeout", "'nan'"]),
    (["--idle-timeout", "inf"], ["--idle-timeout", "'inf'"]),
    (["--startup-delay", "nan"], ["--startup-delay", "'nan'"]),
    (["--status-report-interval", "1e999"], ["--status-report-interval", "'1e999'"]),
    (["--overall-cost-budget", "nan"], ["--overall-cost-budget", "'nan'"]),
    (["--command-cost-budget", "/x=nan"], ["--command-cost-budget '/x=nan'"]),
    (["--command-cost-budget", "/x=inf"], ["--command-cost-budget '/x=inf'"]),
    (["--command-budget", f"/x={2**64}"], ["--command-budget", str(2**64)]),
    (["--overall-token-budget", str(2**64)], ["--overall-token-budget", str(2**64)]),
    (["--max-console-lines", str(2**64)], ["--max-console-lines"]),
    (["--start-at", "2020-01-01T00:00"], ["--start-at: '2020-01-01T00:00'", "in the past"]),
    (["--start-at", "99999999999h"], ["--start-at: '99999999999h'", "out of range"]),
    (["--start-at", "9000h"], ["--start-at: '9000h'", "days ahead"]),
    (["--start-at", ""], ["--start-at", "empty"]),
    (["--orchestration-id", "bad/id"], ["--orchestration-id 'bad/id'"]),
    (["--orchestration-id", "a b"], ["--orchestration-id 'a b'"]),
    (["--orchestration-id", "x\n"], ["--orchestration-id 'x\\n'"]),
    (["--orchestration-id", "-x"], ["--orchestration-id '-x'"]),
    (["--orchestration-id", "x" * 65], ["--orchestration-id"]),
]


@pytest.mark.parametrize(("flags", "fragments"), FLAGS, ids=[" ".join(f[0]) for f in FLAGS])
def test_bad_flags(tmp_path: Path, flags: list[str], fragments: list[str]) -> None:
    box = Sandbox(tmp_path)
    out = box.run("--dry-run", "--config", str(box.config(cfg())), *flags)
    assert_refused(out, *fragments)


SETTINGS: list[tuple[dict[str, str], bytes | None, list[str]]] = [
    ({"COORDINATOR_NO_DATABASE": "maybe"}, None, ["COORDINATOR_NO_DATABASE = 'maybe'"]),
    ({"COORDINATOR_NO_DATABASE": "2"}, None, ["COORDINATOR_NO_DATABASE = '2'", "environment"]),
    ({"COORDINATOR_LOG_LEVEL": "loud"}, None, ["COORDINATOR_LOG_LEVEL = 'loud'"]),
    ({}, b"COORDINATOR_NO_DATABASE=perhaps\n", ["COORDINATOR_NO_DATABASE = 'perhaps' (.env)"]),
    ({}, b"A=1\nsk-secret-value without an equals sign\n", [".env: line 2: cannot parse"]),
    ({}, b"A=1\nB='unterminated\n", [".env: line 2: cannot parse"]),
    ({}, b"A=1\nB=caf\xe9\n", [".env: line 2: not UTF-8"]),
]


@pytest.mark.parametrize(
    ("env", "dotenv", "fragments"), SETTINGS, ids=[str(c[2][0]) for c in SETTINGS]
)
def test_bad_settings(
    tmp_path: Path, env: dict[str, str], dotenv: bytes | None, fragments: list[str]
) -> None:
    box = Sandbox(tmp_path)
    if dotenv is not None:
        (tmp_path / ".env").write_bytes(dotenv)
    config = str(box.config(cfg()))
    for args in (["--dry-run"], ["run", "--no-db"]):
        line = assert_refused(box.run(*args, "--config", config, env=box.env(**env)), *fragments)
        assert "sk-secret" not in line  # a .env line is not echoed: it may hold a secret
    assert not box.marker.exists()


def test_empty_boolean_setting_counts_as_unset(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    env = box.env(COORDINATOR_NO_DATABASE="")
    out = box.run("--dry-run", "--config", str(box.config(cfg())), env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr
