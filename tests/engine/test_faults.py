"""The engine against a replaying stand-in for claude: every fault has a clear outcome."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from coordinator.engine.instance import Limits
from coordinator.engine.state import Status
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
