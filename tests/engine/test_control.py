"""The orchestrator's control methods on real (replay) processes, in process: a pending
instance paused does not launch until unpaused; a pending one stopped never launches; one
paused while waiting at a barrier stays paused after the release until unpaused; and the
listener applies and acknowledges commands from the in-memory channel."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from coordinator.config import parse_config
from coordinator.control.channel import MemoryChannel
from coordinator.control.commands import Verb
from coordinator.control.listener import ControlListener
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import Status
from coordinator.plan import PlannedInstance, RunOptions, build_plan
from tests.engine.helpers import REPLAY, write_script
from tests.unit.streams import api_response, result, usage


def start(
    tmp_path: Path,
    scripts: dict[str, list[dict[str, Any]]],
    orchestration: dict[str, Any] | None = None,
) -> tuple[Orchestrator, asyncio.Task[RunOutcome]]:
    config = parse_config(
        {
            "orchestration": {
                "startup_delay": 0,
                "progress_instructions": False,
                **(orchestration or {}),
            },
            "instances": [{"command": "go", "name": n} for n in scripts],
        }
    )
    plan = build_plan(
        config,
        RunOptions(orchestration_id="ctl"),
        claude_bin=REPLAY,
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )
    paths = {n: write_script(tmp_path / f"{n}.json", s) for n, s in scripts.items()}

    def env(inst: PlannedInstance) -> dict[str, str]:
        return {"REPLAY_SCRIPT": str(paths[inst.name])}

    orch = Orchestrator(plan, base_env=dict(os.environ), limits=Limits(), instance_env=env)
    return orch, asyncio.create_task(orch.run())


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def lines(raw: list[bytes]) -> dict[str, list[str]]:
    return {"lines": [r.decode().rstrip("\n") for r in raw]}


def finishing(name: str) -> list[dict[str, Any]]:
    return [lines(api_response(f"{name}-1", 10, 5)), lines([result(usage(10, 5))])]


def stopped(pid: int) -> bool:
    return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)


async def test_a_pending_instance_paused_does_not_launch_until_unpaused(tmp_path: Path) -> None:
    orch, running = start(
        tmp_path,
        {"a": finishing("a"), "b": finishing("b")},
        {"startup_delay": 0.3},  # b launches 0.3 s after a
    )
    await until(lambda: "a" in orch.runs, 10, "a to launch")
    assert orch.pause_instances(["b"]) == {"b": "paused (not launched until unpaused)"}
    b = orch.states["b"]
    assert b.status is Status.PAUSED
    await until(lambda: orch.states["a"].status is Status.COMPLETED, 20, "a to complete")
    await until(lambda: "b" in orch.runs, 10, "b's launch slot to come")  # and pass
    assert b.status is Status.PAUSED and b.pid is None and b.started_mono is None
    assert orch.unpause_instances(["b"]) == {"b": "unpaused (pending)"}
    outcome = await asyncio.wait_for(running, 30)
    assert {s.name: s.status for s in outcome.states} == {
        "a": Status.COMPLETED,
        "b": Status.COMPLETED,
    }
    assert b.paused_s == 0.0  # paused before it started: no working time to give back


async def test_a_pending_instance_stopped_never_launches(tmp_path: Path) -> None:
    orch, running = start(
        tmp_path,
        {"a": finishing("a"), "b": finishing("b")},
        {"startup_delay": 600},
    )
    await until(lambda: "a" in orch.runs, 10, "a to launch")
    assert orch.stop_instances(["b"], "stopped by test") == {"b": "cancelled (never launched)"}
    outcome = await asyncio.wait_for(running, 30)  # not 600 s
    by = {s.name: s for s in outcome.states}
    assert by["a"].status is Status.COMPLETED
    assert by["b"].status is Status.CANCELLED and by["b"].pid is None
    assert by["b"].reason == "not launched: stopped by test"
    assert not outcome.interrupted


async def test_paused_at_a_barrier_stays_paused_after_the_release(tmp_path: Path) -> None:
    go = tmp_path / "b.go"
    after = tmp_path / "a.after30"
    scripts: dict[str, list[dict[str, Any]]] = {
        "a": [
            lines(api_response("a-1", 10, 5, texts=("PROGRESS: 30%",))),
            {"sleep": 0.05},
            {"marker": str(after)},
            lines([result(usage(10, 5))]),
        ],
        "b": [
            {"wait_file": str(go), "timeout": 60},
            lines(api_response("b-1", 10, 5, texts=("PROGRESS: 30%",))),
            {"sleep": 0.5},
            lines([result(usage(10, 5))]),
        ],
    }
    orch, running = start(tmp_path, scripts, {"sync": {"mode": "milestone", "timeout_s": 60}})
    a = orch.states["a"]
    await until(lambda: a.status is Status.WAITING, 20, "a to wait at 30%")
    assert a.pid is not None
    assert orch.pause_instances(["a"]) == {"a": "paused"}
    assert a.status is Status.PAUSED
    go.touch()
    await until(lambda: orch.states["b"].status is Status.COMPLETED, 20, "b to complete")
    await until(lambda: a.waiting_since is None, 10, "the barrier to release a")
    assert a.status is Status.PAUSED and stopped(a.pid) and not after.exists()
    assert orch.unpause_instances(["a"]) == {"a": "unpaused (running)"}
    outcome = await asyncio.wait_for(running, 30)
    assert {s.name: s.status for s in outcome.states} == {
        "a": Status.COMPLETED,
        "b": Status.COMPLETED,
    }
    assert after.exists()
    # Waiting and paused overlap while paused at the barrier: counted once.
    assert a.paused_s > 0 and a.wait_s > 0
    assert a.paused_s + a.wait_s <= a.duration_s()


async def test_the_listener_applies_and_acknowledges_commands(tmp_path: Path) -> None:
    go = tmp_path / "a.go"
    scripts = {"a": [{"wait_file": str(go), "timeout": 60}, *finishing("a")]}
    orch, running = start(tmp_path, scripts)
    channel = MemoryChannel(["ctl"])
    listener = ControlListener(channel, "ctl", orch, poll_s=0.2)
    await listener.start()
    try:
        await until(lambda: orch.states["a"].pid is not None, 10, "a to start")

        async def acked(verb: Verb, names: list[str]) -> dict[str, str] | str:
            sent = await channel.send("ctl", verb, names, "test:1")
            for _ in range(500):
                row = await channel.get(sent.id)
                if row is not None and row.acked_at is not None:
                    return row.error or (row.outcome or {})
                await asyncio.sleep(0.02)
            raise AssertionError("no ack")

        assert await acked(Verb.PAUSE, []) == {"a": "paused"}
        assert await acked(Verb.PAUSE, ["zed"]) == (
            "orchestration ctl: no instance named 'zed' (instances: a)"
        )
        assert await acked(Verb.UNPAUSE, ["a"]) == {"a": "unpaused (running)"}
        assert await acked(Verb.STOP, ["a"]) == {"a": "cancelled"}  # once it ended
        outcome = await asyncio.wait_for(running, 30)
        assert outcome.states[0].status is Status.CANCELLED
    finally:
        await listener.close()
