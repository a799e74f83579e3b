"""Acceptance for the sync modes: real claude instances at three speeds (server-side delays)
against the scripted model server, run by the real engine, with the barrier on a real
Postgres. Checked three ways: what the coordinator saw (milestone hits), what the database
recorded (checkpoint and barrier rows, server clock), and what the model server received
(a paused instance sends its next request only after the release).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from coordinator.db import open_store
from coordinator.engine.db_sink import DbSink
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import Status
from coordinator.offline.server import ModelServer
from coordinator.status.from_db import snapshot, sync_line
from tests.e2e.harness import base_env, offline_env, offline_plan

pytestmark = pytest.mark.claude

MILESTONES = (30, 50, 70, 90)
DELAYS = {"fast": 0.05, "medium": 0.6, "slow": 1.3}  # seconds per model response


def milestone_conversation(delay: float, work_s: float = 0.5) -> dict[str, Any]:
    """One response per milestone, each with a real Bash tool call, then a final answer.
    ``delay``: the model's time per response; ``work_s``: the tool's."""
    responses: list[dict[str, Any]] = [
        {
            "text": f"Working. PROGRESS: {pct}%",
            # The work after the marker takes a moment (as real work does), so the pause
            # lands while it runs, even on a loaded machine.
            "tool_uses": [
                {
                    "name": "Bash",
                    "input": {"command": f"sleep {work_s:g}; echo {pct} >> progress.log"},
                }
            ],
            "delay_s": delay,
            "usage": {"input_tokens": 100, "output_tokens": 20},
        }
        for pct in MILESTONES
    ]
    responses.append({"text": "Finished.", "delay_s": delay})
    return {"responses": responses}


async def run_synced(
    tmp_path: Path,
    dsn: str,
    orchestration_id: str,
    instances: list[dict[str, Any]],
    script: dict[str, Any],
    sync: dict[str, Any],
) -> tuple[Orchestrator, RunOutcome, ModelServer]:
    config = {"orchestration": {"sync": sync}, "instances": instances}
    plan = offline_plan(tmp_path, config, orchestration_id)
    store = await open_store(dsn)
    sink = DbSink(store, "<test>", dsn)
    async with ModelServer(script) as server:
        env = offline_env(server, tmp_path / "home")
        base = base_env()
        orch = Orchestrator(
            plan,
            base_env=base,
            limits=Limits(timeout=120, post_result_grace=10),
            instance_env=env,
            sink=sink,
            barrier_dsn=dsn,
            barrier_poll_s=0.5,
        )
        outcome = await orch.run()
    await sink.close("completed", {})
    return orch, outcome, server


async def from_db(dsn: str, orchestration_id: str) -> dict[str, Any]:
    store = await open_store(dsn, run_migrations=False)
    try:
        return await snapshot(store, orchestration_id)
    finally:
        await store.close()


def request_times(server: ModelServer, key: str) -> list[float]:
    return [r.received_at for r in server.requests if r.key == key and not r.auxiliary]


def served_times(server: ModelServer, key: str) -> list[float]:
    return [s.served_at for s in server.served if s.key == key and s.complete]


async def test_milestone_mode_three_speeds(tmp_path: Path, pg_dsn: str) -> None:
    names = list(DELAYS)
    script = {"conversations": {n: milestone_conversation(d) for n, d in DELAYS.items()}}
    instances = [
        {"name": n, "command": f"work {n}", "workspace": n, "allowed_tools": ["Bash"]}
        for n in names
    ]
    orch, outcome, server = await run_synced(
        tmp_path, pg_dsn, "sync-milestone", instances, script, {"mode": "milestone"}
    )
    by = {s.name: s for s in outcome.states}
    assert all(s.status is Status.COMPLETED for s in outcome.states), [
        (s.name, s.status, s.error, list(s.stderr_tail)) for s in outcome.states
    ]
    # Tools really ran, in order, in every workspace.
    for n in names:
        assert (tmp_path / n / "progress.log").read_text().split() == [str(m) for m in MILESTONES]

    # 1. The coordinator: every arrival at the next milestone after every arrival at this one.
    hits = {s.name: {h.pct: h.at_unix_ms for h in s.milestone_hits} for s in outcome.states}
    for m, nxt in itertools.pairwise(MILESTONES):
        assert min(hits[n][nxt] for n in names) >= max(hits[n][m] for n in names), (m, hits)

    # 2. The model server: after the response that carried milestone j, an instance's next
    # request came only after every instance had been served its milestone-j response.
    for j in range(len(MILESTONES)):
        last_served = max(served_times(server, n)[j] for n in names)
        for n in names:
            assert request_times(server, n)[j + 1] > last_served, (n, MILESTONES[j])

    # 3. The database: barrier arrivals (server clock) obey the same order, every point was
    # released without a timeout, and the checkpoints are all there.
    conn = await asyncpg.connect(pg_dsn)
    try:
        arrivals = await conn.fetch(
            "SELECT point, name, arrived_at FROM barrier_arrivals WHERE orchestration_id = $1",
            "sync-milestone",
        )
        releases = await conn.fetch(
            "SELECT point, timed_out, released_at FROM barrier_releases"
            " WHERE orchestration_id = $1",
            "sync-milestone",
        )
        checkpoints = await conn.fetch(
            "SELECT scenario_id, milestone_name FROM scenario_orchestration_checkpoints"
            " WHERE orchestration_id = $1",
            "sync-milestone",
        )
    finally:
        await conn.close()
    at = {(r["point"], r["name"]): r["arrived_at"] for r in arrivals}
    released = {r["point"]: r for r in releases}
    for m, nxt in itertools.pairwise(MILESTONES):
        assert min(at[(f"milestone:{nxt}", n)] for n in names) > max(
            at[(f"milestone:{m}", n)] for n in names
        )
    for m in MILESTONES:
        point = released[f"milestone:{m}"]
        assert not point["timed_out"]
        assert point["released_at"] >= max(at[(f"milestone:{m}", n)] for n in names)
    labels = {(r["scenario_id"], r["milestone_name"]) for r in checkpoints}
    for n in names:
        for label in ("started", "30%", "50%", "70%", "90%", "completed"):
            assert (n, label) in labels

    # Waiting was kept apart: the fast one waited, and the wait is in its results.
    assert by["fast"].wait_s > 2.0 > by["slow"].wait_s
    assert orch.sync_line() == "Sync points: ✓ 30% ✓ 50% ✓ 70% ✓ 90%"
    # ... and another process reading the database (``coordinator status``) sees the same.
    snap = await from_db(pg_dsn, "sync-milestone")
    assert sync_line(snap["orchestration"], snap["sync"]) == orch.sync_line()
    stored = {r.name: r for r in snap["instances"]}
    assert stored["fast"].wait_s == pytest.approx(by["fast"].wait_s, abs=0.01)


async def test_free_mode_fast_finishes_before_slow_reaches_half(
    tmp_path: Path, pg_dsn: str
) -> None:
    fast = milestone_conversation(0.05, 0)
    slow = milestone_conversation(0.05, 0)
    for response in slow["responses"][:2]:  # slow up to 50%, then quick to the end
        response["delay_s"] = 3.0
    script = {"conversations": {"fast": fast, "slow": slow}}
    instances = [
        {"name": n, "command": f"work {n}", "workspace": n, "allowed_tools": ["Bash"]}
        for n in ("fast", "slow")
    ]
    _orch, outcome, _server = await run_synced(
        tmp_path, pg_dsn, "sync-free", instances, script, {"mode": "free"}
    )
    by = {s.name: s for s in outcome.states}
    assert all(s.status is Status.COMPLETED for s in outcome.states)
    slow_50 = next(h.at_unix_ms for h in by["slow"].milestone_hits if h.pct == 50)
    assert (by["fast"].ended_unix or 0) * 1000 < slow_50


async def test_lockstep_steps(tmp_path: Path, pg_dsn: str) -> None:
    turns = 3
    script = {
        "conversations": {
            n: {"responses": [{"text": f"step {k} done", "delay_s": d} for k in range(turns)]}
            for n, d in DELAYS.items()
        }
    }
    instances = [
        {
            "name": n,
            "command": "step 0",
            "steps": [f"step {k}" for k in range(1, turns)],
            "workspace": n,
        }
        for n in DELAYS
    ]
    _orch, outcome, server = await run_synced(
        tmp_path, pg_dsn, "sync-lockstep", instances, script, {"mode": "lockstep"}
    )
    assert all(s.status is Status.COMPLETED for s in outcome.states), [
        (s.name, s.status, s.error) for s in outcome.states
    ]
    for k in range(1, turns):
        last_served = max(served_times(server, n)[k - 1] for n in DELAYS)
        first_request = min(request_times(server, n)[k] for n in DELAYS)
        assert first_request > last_served, k
    by = {s.name: s for s in outcome.states}
    assert [w[0] for w in by["fast"].sync_waits] == ["step:1", "step:2"]


async def test_hang_times_out_and_failure_is_not_waited_for(tmp_path: Path, pg_dsn: str) -> None:
    """``hangs`` takes 8 s for its 50% response (sync timeout 2 s); ``dies`` gets a
    authentication error (not retried) before any milestone. ``steady`` is held neither by the dead
    one nor, beyond the timeout, by the hanging one; the timeout is recorded."""
    steady = milestone_conversation(0.05, 0)
    hangs = milestone_conversation(0.05, 0)
    hangs["responses"][1]["delay_s"] = 8.0
    dies = {"responses": [{"error": {"status": 401, "should_retry": False}, "repeat": 50}]}
    script = {"conversations": {"steady": steady, "hangs": hangs, "dies": dies}}
    instances = [
        {"name": n, "command": f"work {n}", "workspace": n, "allowed_tools": ["Bash"]}
        for n in ("steady", "hangs", "dies")
    ]
    orch, outcome, _server = await run_synced(
        tmp_path, pg_dsn, "sync-faults", instances, script, {"mode": "milestone", "timeout_s": 2}
    )
    by = {s.name: s for s in outcome.states}
    assert by["dies"].status is Status.FAILED
    assert by["steady"].status is Status.COMPLETED and by["hangs"].status is Status.COMPLETED
    # steady went past 50% (and finished) long before hangs reached 50%.
    hangs_50 = next(h.at_unix_ms for h in by["hangs"].milestone_hits if h.pct == 50)
    assert (by["steady"].ended_unix or 0) * 1000 < hangs_50
    timeouts = outcome.sync["timeouts"]
    assert isinstance(timeouts, list)
    assert any(t["point"] == "milestone:50" and t["missing"] == ["hangs"] for t in timeouts)
    assert all("dies" not in t["missing"] for t in timeouts)
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT timed_out, missing FROM barrier_releases"
            " WHERE orchestration_id = $1 AND point = $2",
            "sync-faults",
            "milestone:50",
        )
        left = await conn.fetchrow(
            "SELECT state, reason FROM barrier_participants"
            " WHERE orchestration_id = $1 AND name = $2",
            "sync-faults",
            "dies",
        )
    finally:
        await conn.close()
    assert row is not None and row["timed_out"] and list(row["missing"]) == ["hangs"]
    assert left is not None and left["state"] == "left"
    # 30% was released without waiting for the dead instance (no timeout there).
    assert "✓ 30%" in (orch.sync_line() or "")
    snap = await from_db(pg_dsn, "sync-faults")
    assert "✗ 50% (timeout: hangs)" in (sync_line(snap["orchestration"], snap["sync"]) or "")
