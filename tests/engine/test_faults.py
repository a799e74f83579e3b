"""The engine against a replaying stand-in for claude: every fault has a clear outcome."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from coordinator.engine.instance import Limits
from coordinator.engine.state import Status
from coordinator.results import build_results
from runner.events import Usage
from tests.engine.helpers import alive_cmdlines, run_replay, sleeper
from tests.unit.streams import api_response, init, result, usage


def stream(*responses: list[bytes]) -> list[str]:
    return [raw.decode().rstrip("\n") for resp in responses for raw in resp]


async def test_garbage_unknown_events_and_huge_line_are_survived(tmp_path: Path) -> None:
    lines = [
        init().decode().rstrip("\n"),
        "this is not json",
        '{"type":"brand_new_event","payload":[1,2,3]}',
        '{"truncated": ',
        *stream(api_response("m1", 100, 20, cr=5, cc=7)),
        result(usage(100, 20, 5, 7), cost=0.25).decode().rstrip("\n"),
    ]
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": "a"}],
        {"a": [{"lines": lines[:4]}, {"bytes": 50 << 20}, {"lines": lines[4:]}]},
    )
    state = outcome.states[0]
    assert state.status is Status.COMPLETED, state.error
    assert state.accountant.usage == Usage(100, 20, 5, 7)
    assert state.accountant.cost_usd == 0.25
    assert any("[non-json] this is not json" in t for t in state.output_tail)
    assert state.bytes > 50 << 20


async def test_exit_codes_signals_and_truncated_stream(tmp_path: Path) -> None:
    partial = stream(api_response("m1", 10, 5))
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": n} for n in ("exits", "killed", "cut", "fine")],
        {
            "exits": [{"lines": partial}, {"exit": 3}],
            "killed": [{"lines": partial}, {"signal": "SIGKILL"}],
            "cut": [{"lines": partial[:2]}],
            "fine": [{"lines": [*partial, result(usage(10, 5)).decode().rstrip()]}],
        },
    )
    by = {s.name: s for s in outcome.states}
    assert by["exits"].status is Status.FAILED and by["exits"].exit_code == 3
    assert "exited with code 3 before its result" in (by["exits"].error or "")
    assert by["exits"].accountant.usage == Usage(10, 5)  # nothing recorded is lost
    assert by["killed"].status is Status.FAILED and by["killed"].error == "killed by SIGKILL"
    assert by["cut"].status is Status.FAILED
    assert by["fine"].status is Status.COMPLETED
    assert outcome.exit_code == 1


async def test_timeout_and_idle_stop_the_group_and_its_grandchildren(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    seen: list[int] = []

    async def watch() -> None:  # the grandchildren must really have run
        while len(alive_cmdlines(tag)) < 2:  # noqa: ASYNC110 - foreign processes: poll
            await asyncio.sleep(0.05)
        seen.append(len(alive_cmdlines(tag)))

    watcher = asyncio.create_task(asyncio.wait_for(watch(), 20))
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": "hangs"}, {"command": "go", "name": "silent"}],
        {
            "hangs": [
                {"spawn": sleeper(tag)},
                {"spawn": sleeper(tag), "new_session": True},
                {"lines": stream(api_response("m1", 1, 1))},
                {"sleep": 600},
            ],
            "silent": [{"sleep": 600}],
        },
        limits=Limits(timeout=3, idle_timeout=2.0, stop_grace=1.0),
    )
    await watcher
    assert seen == [2]
    by = {s.name: s for s in outcome.states}
    assert by["hangs"].status is Status.TIMEOUT
    assert by["silent"].status is Status.TIMEOUT
    assert "no output for 2s" in (by["silent"].reason or "")
    assert alive_cmdlines(tag) == []


async def test_one_failure_does_not_stop_the_others(tmp_path: Path) -> None:
    good = [*stream(api_response("m1", 3, 4)), result(usage(3, 4)).decode().rstrip()]
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": "bad"}, {"command": "go", "name": "good"}],
        {"bad": [{"exit": 1}], "good": [{"sleep": 0.3}, {"lines": good}]},
    )
    by = {s.name: s for s in outcome.states}
    assert by["bad"].status is Status.FAILED
    assert by["good"].status is Status.COMPLETED


async def test_missing_workspace_fails_that_instance_only(tmp_path: Path) -> None:
    good = [*stream(api_response("m1", 3, 4)), result(usage(3, 4)).decode().rstrip()]
    _orch, outcome = await run_replay(
        tmp_path,
        [
            {"command": "go", "name": "nows", "workspace": "does/not/exist"},
            {"command": "go", "name": "good"},
        ],
        {"nows": [], "good": [{"lines": good}]},
    )
    by = {s.name: s for s in outcome.states}
    assert by["nows"].status is Status.FAILED
    assert "workspace not found" in (by["nows"].error or "")
    assert by["good"].status is Status.COMPLETED


async def test_claude_missing_or_not_executable_fails_each_instance_at_once(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere" / "claude"
    not_executable = tmp_path / "claude-not-executable"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    names = ["a", "b", "c"]
    for claude, error in (
        (missing, f"claude executable not found: {missing}"),
        (not_executable, f"cannot start: [Errno 13] Permission denied: '{not_executable}'"),
    ):
        orch, outcome = await asyncio.wait_for(  # nothing hangs
            run_replay(
                tmp_path,
                [{"command": "go", "name": n} for n in names],
                {n: [] for n in names},
                claude_bin=str(claude),
            ),
            10,
        )
        for state in outcome.states:
            assert state.status is Status.FAILED, state.name
            assert state.error == error
            assert state.last_event == error  # what the status row shows
            assert state.pid is None and state.exit_code is None
            assert state.ended_unix is not None
        assert outcome.exit_code == 1
        # the results record every instance's failure
        results = json.loads(json.dumps(build_results(orch.plan, outcome)))
        assert results["counts"] == {"failed": 3}
        assert [(i["name"], i["status"], i["error"]) for i in results["instances"]] == [
            (n, "failed", error) for n in names
        ]


async def test_claude_exiting_at_once_fails_with_its_exit_code(tmp_path: Path) -> None:
    claude = tmp_path / "claude-exits-3"
    # (It prints a fixed text: a config env value would be masked as the secret it is.)
    claude.write_text('#!/bin/sh\n[ -n "$SAY" ] && echo "config unreadable" >&2\nexit 3\n')
    claude.chmod(0o755)
    _orch, outcome = await asyncio.wait_for(
        run_replay(
            tmp_path,
            [
                {"command": "go", "name": "mute"},
                {"command": "go", "name": "says", "env": {"SAY": "1"}},
            ],
            {"mute": [], "says": []},
            claude_bin=str(claude),
        ),
        10,
    )
    by = {s.name: s for s in outcome.states}
    for state in by.values():
        assert state.status is Status.FAILED and state.exit_code == 3
        assert state.pid is not None
        assert state.accountant.results == 0
    assert by["mute"].error == "exited with code 3 before its result"
    assert by["says"].error == "exited with code 3 before its result: config unreadable"
    assert alive_cmdlines(str(claude)) == []


@pytest.mark.parametrize("via", ["flag", "env"])
def test_cli_with_missing_claude_says_so_in_one_line(tmp_path: Path, via: str) -> None:
    missing = str(tmp_path / "nowhere" / "claude")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"instances": [{"command": "go", "name": "a"}]}))
    output = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    argv = [
        sys.executable,
        "-m",
        "coordinator.cli",
        "run",
        "--config",
        str(config),
        "--no-db",
        "--output",
        str(output),
        "--log-file",
        str(tmp_path / "log.jsonl"),
    ]
    if via == "flag":
        argv += ["--claude-bin", missing]
        source = "--claude-bin"
    else:
        env["COORDINATOR_CLAUDE_BIN"] = missing
        source = "COORDINATOR_CLAUDE_BIN"
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"coordinator: error: {source}: {missing!r} is not an executable file\n"
    assert proc.stdout == ""
    assert not output.exists()  # refused up front: nothing launched, nothing to record
