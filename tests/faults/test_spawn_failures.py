"""Spawn failures are named at once: the instance fails with the OS error in its reason,
the others run on. A prompt too long for argv simply works: it goes to stdin."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from coordinator.config.loader import load_config
from coordinator.dryrun import render_json, render_text
from coordinator.engine.state import Status
from coordinator.plan import RunOptions, build_plan
from coordinator.results import build_results
from runner.argv import ARGV_PROMPT_LIMIT
from tests.engine.helpers import REPLAY, run_replay
from tests.unit.streams import init, result, usage

GOOD: list[dict[str, Any]] = [
    {"lines": [init().decode().rstrip("\n"), result(usage(10, 5)).decode().rstrip("\n")]}
]


async def _run(
    tmp_path: Path,
    bad: dict[str, Any],
    *,
    claude_bin: str = REPLAY,
    good: bool = True,
) -> dict[str, Any]:
    """``bad`` (an instance config) beside a ``good`` one; returns the results by name."""
    instances = [{"command": "go", "name": "bad", **bad}]
    scripts: dict[str, list[dict[str, Any]]] = {"bad": GOOD}
    if good:
        instances.append({"command": "go", "name": "good"})
        scripts["good"] = GOOD
    orch, outcome = await asyncio.wait_for(
        run_replay(tmp_path, instances, scripts, claude_bin=claude_bin), 30
    )
    results = json.loads(json.dumps(build_results(orch.plan, outcome), default=str))
    by = {i["name"]: i for i in results["instances"]}
    if good:
        assert by["good"]["status"] == "completed", by["good"]
    for state in outcome.states:
        assert state.status.finished, f"{state.name} left {state.status.value}"
    return dict(by["bad"])


def _failed_with(row: dict[str, Any], *parts: str) -> None:
    assert row["status"] == "failed", row
    assert row["pid"] is None and row["exit_code"] is None
    for part in parts:
        assert part in (row["error"] or ""), row["error"]


async def test_environment_value_too_long_is_argument_list_too_long(tmp_path: Path) -> None:
    row = await _run(tmp_path, {"env": {"HUGE": "x" * (200 * 1024)}})
    _failed_with(row, "argument list too long for", "Argument list too long")


async def test_text_file_without_a_shebang_is_exec_format_error(tmp_path: Path) -> None:
    claude = tmp_path / "claude-text"
    claude.write_text("echo this is not a program\n")
    claude.chmod(0o755)
    row = await _run(tmp_path, {}, claude_bin=str(claude), good=False)
    _failed_with(row, f"exec format error: {claude} is neither a script with a #! line")


def _other_arch_binary(path: Path) -> Path:
    """A copy of ``true`` whose ELF e_machine says aarch64 (x86-64 on an arm machine)."""
    true = shutil.which("true")
    assert true is not None
    data = bytearray(Path(true).read_bytes())
    assert data[:4] == b"\x7fELF"
    data[18:20] = (0xB7 if os.uname().machine != "aarch64" else 0x3E).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    path.chmod(0o755)
    return path


async def test_binary_for_another_architecture_is_exec_format_error(tmp_path: Path) -> None:
    claude = _other_arch_binary(tmp_path / "claude-other-arch")
    row = await _run(tmp_path, {}, claude_bin=str(claude), good=False)
    _failed_with(row, "exec format error", "a program for this machine")


async def test_missing_interpreter_is_a_bad_interpreter_not_a_missing_claude(
    tmp_path: Path,
) -> None:
    claude = tmp_path / "claude-bad-shebang"
    claude.write_text("#!/no/such/interpreter -x\nexit 0\n")
    claude.chmod(0o755)
    row = await _run(tmp_path, {}, claude_bin=str(claude), good=False)
    _failed_with(row, f"bad interpreter /no/such/interpreter in {claude}")
    assert "claude executable not found" not in row["error"]


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"command": "go\x00on"}, "a NUL byte in argument"),
        ({"env": {"WITH_NUL": "a\x00b"}}, "a NUL byte in environment variable 'WITH_NUL'"),
    ],
)
async def test_nul_byte_in_argv_or_env_is_named(
    tmp_path: Path, bad: dict[str, Any], named: str
) -> None:
    row = await _run(tmp_path, bad)
    _failed_with(row, named, "embedded null byte")


def _big_prompt(size: int = 3_000_000) -> str:
    return "Summarise this. " + "lorem ipsum dolor sit amet " * (size // 27)


async def test_prompt_too_long_for_argv_goes_to_stdin(tmp_path: Path) -> None:
    prompt = _big_prompt()
    saved = tmp_path / "turn.json"
    steps: list[dict[str, Any]] = [{"await_turn": True, "save": str(saved)}, *GOOD]
    instances = [{"command": prompt, "name": "big"}, {"command": "go", "name": "good"}]
    orch, outcome = await asyncio.wait_for(
        run_replay(tmp_path, instances, {"big": steps, "good": GOOD}), 60
    )
    by = {s.name: s for s in outcome.states}
    assert by["big"].status is Status.COMPLETED, by["big"].error
    assert by["good"].status is Status.COMPLETED
    big = orch.plan.instances[0]
    assert big.streams_input and "--input-format" in big.argv and prompt not in big.argv
    turn = orjson.loads(saved.read_bytes())
    assert turn["type"] == "user" and turn["message"]["content"] == prompt
    assert turn["session_id"] == big.session_id


def test_dry_run_shows_the_long_prompt_is_sent_on_stdin(tmp_path: Path) -> None:
    prompt = _big_prompt()
    short = "x" * ARGV_PROMPT_LIMIT
    config = tmp_path / "big.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"progress_instructions": False},
                "instances": [
                    {"command": prompt, "name": "big"},
                    {"command": short, "name": "limit"},
                ],
            }
        )
    )
    plan = build_plan(
        load_config(config),
        RunOptions(orchestration_id="dry"),
        claude_bin=sys.executable,
        config_path=config,
        cwd=tmp_path,
        now=datetime.now().astimezone(),
    )
    text = render_text(plan)
    size = len(prompt.encode())
    assert f"turn 1 (stdin: {size:,} bytes, too long for an argument): Summarise this." in text
    assert len(text) < 2 * ARGV_PROMPT_LIMIT  # the 100 kB one is shown, not the 3 MB one
    data = json.loads(render_json(plan))
    big, limit = data["instances"]
    assert big["stdin_turns"] == [prompt] and big["prompt_on_stdin_because_too_long"] is True
    assert "--input-format" in big["argv"] and prompt not in big["argv"]
    assert limit["argv"][-1] == short and limit["stdin_turns"] == []  # the limit still fits
