"""One contract, two stores: every test runs against MemoryStore and PostgresStore."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.db.store import (
    OrchestrationExistsError,
    OrchestrationNotFoundError,
    Store,
)
from coordinator.errors import DatabaseError
from coordinator.pool.entries import Kind, PoolEntry

SESSION = "0b9e7f38-2a55-4c3f-9a55-0d7c55e1e7a1"


def orchestration(id: str = "orch-1", **overrides: object) -> OrchestrationRow:
    fields: dict[str, object] = {
        "id": id,
        "status": "running",
        "host": "host-a",
        "sync_mode": "barrier",
        "config": {"instances": [{"name": "a", "prompt": "hi"}], "nested": {"x": [1, 2.5, None]}},
        "budgets": {"overall_tokens": 100_000},
    }
    fields.update(overrides)
    return OrchestrationRow(**fields)  # type: ignore[arg-type]


def instance(name: str = "a", orch: str = "orch-1", **overrides: object) -> InstanceRow:
    fields: dict[str, object] = {"orchestration_id": orch, "name": name, "status": "running"}
    fields.update(overrides)
    return InstanceRow(**fields)  # type: ignore[arg-type]


def checkpoint(
    scenario: str, milestone: str, pct: float, ts: int, orch: str = "orch-1", **overrides: object
) -> CheckpointRow:
    return CheckpointRow(
        orchestration_id=orch,
        scenario_id=scenario,
        milestone_name=milestone,
        progress_pct=pct,
        timestamp_unix=ts,
        **overrides,  # type: ignore[arg-type]
    )


async def test_create_and_get_orchestration(store: Store) -> None:
    created = await store.create_orchestration(orchestration())
    assert created.started_at is not None and created.ended_at is None
    assert created.started_at.tzinfo is not None
    fetched = await store.get_orchestration("orch-1")
    assert fetched == created
    assert fetched.config == {
        "instances": [{"name": "a", "prompt": "hi"}],
        "nested": {"x": [1, 2.5, None]},
    }
    assert fetched.budgets == {"overall_tokens": 100_000}
    assert fetched.results is None
    assert await store.get_orchestration("nope") is None


async def test_started_at_is_the_stores_clock_not_the_callers(store: Store) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    created = await store.create_orchestration(orchestration(started_at=long_ago))
    assert created.started_at is not None and created.started_at > long_ago


async def test_create_twice_is_refused(store: Store) -> None:
    await store.create_orchestration(orchestration())
    with pytest.raises(OrchestrationExistsError):
        await store.create_orchestration(orchestration(status="other"))
    fetched = await store.get_orchestration("orch-1")
    assert fetched is not None and fetched.status == "running"


async def test_finish_orchestration(store: Store) -> None:
    created = await store.create_orchestration(orchestration())
    finished = await store.finish_orchestration("orch-1", "succeeded", {"total_tokens": 42})
    assert finished.status == "succeeded"
    assert finished.results == {"total_tokens": 42}
    assert finished.ended_at is not None and created.started_at is not None
    assert finished.ended_at >= created.started_at
    assert await store.get_orchestration("orch-1") == finished


async def test_finish_unknown_orchestration(store: Store) -> None:
    with pytest.raises(OrchestrationNotFoundError):
        await store.finish_orchestration("nope", "failed", None)


async def test_history_newest_first_and_limited(store: Store) -> None:
    assert await store.list_orchestrations() == []
    assert await store.latest_orchestration_id() is None
    for i in range(5):
        await store.create_orchestration(orchestration(f"orch-{i}"))
    listed = await store.list_orchestrations(limit=3)
    assert [r.id for r in listed] == ["orch-4", "orch-3", "orch-2"]
    assert await store.latest_orchestration_id() == "orch-4"


async def test_upsert_instances_keeps_newest_snapshot(store: Store) -> None:
    await store.create_orchestration(orchestration())
    started = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    await store.upsert_instances([instance("b"), instance("a", started_at=started)])
    full = instance(
        "a",
        status="succeeded",
        session_id=SESSION,
        pid=4242,
        host="host-a",
        input_tokens=10,
        output_tokens=20,
        cache_read_tokens=30,
        cache_creation_tokens=40,
        total_tokens=100,
        cost_usd=0.0123,
        tool_calls={"Bash": 3, "Read": 1},
        turns=4,
        progress_pct=100.0,
        exit_code=0,
        error=None,
        reason="done",
        started_at=started,
        ended_at=started,
    )
    await store.upsert_instances([full])
    rows = await store.list_instances("orch-1")
    assert [r.name for r in rows] == ["a", "b"]
    a = rows[0]
    assert a.updated_at is not None
    from dataclasses import replace

    assert replace(a, updated_at=None) == full
    assert rows[1].status == "running" and rows[1].session_id is None


async def test_upsert_same_instance_twice_in_one_call(store: Store) -> None:
    await store.create_orchestration(orchestration())
    await store.upsert_instances([instance("a", turns=1), instance("a", turns=2)])
    (row,) = await store.list_instances("orch-1")
    assert row.turns == 2


async def test_instances_are_per_orchestration(store: Store) -> None:
    await store.create_orchestration(orchestration("x"))
    await store.create_orchestration(orchestration("y"))
    await store.upsert_instances([instance("a", orch="x"), instance("a", orch="y", turns=9)])
    assert [r.turns for r in await store.list_instances("x")] == [0]
    assert [r.turns for r in await store.list_instances("y")] == [9]
    assert await store.list_instances("z") == []


async def test_rows_for_unknown_orchestration_are_refused(store: Store) -> None:
    with pytest.raises(DatabaseError):
        await store.upsert_instances([instance("a", orch="missing")])
    with pytest.raises(DatabaseError):
        await store.add_checkpoints([checkpoint("a", "m", 1, 1, orch="missing")])


async def test_checkpoints_roundtrip_and_order(store: Store) -> None:
    await store.create_orchestration(orchestration())
    await store.add_checkpoints(
        [
            checkpoint("b", "start", 0, 1_000),
            checkpoint(
                "a", "half", 50, 2_000, state_snapshot={"files": ["x.py"]}, metrics={"tokens": 7}
            ),
            checkpoint("a", "start", 0, 1_000),
        ]
    )
    rows = await store.list_checkpoints("orch-1")
    assert [(r.scenario_id, r.milestone_name) for r in rows] == [
        ("a", "start"),
        ("b", "start"),
        ("a", "half"),
    ]
    half = rows[2]
    assert half.state_snapshot == {"files": ["x.py"]} and half.metrics == {"tokens": 7}
    assert half.progress_pct == 50.0 and half.timestamp_unix == 2_000
    assert half.created_at is not None
    only_a = await store.list_checkpoints("orch-1", scenario_id="a")
    assert [r.milestone_name for r in only_a] == ["start", "half"]


async def test_checkpoints_are_idempotent(store: Store) -> None:
    await store.create_orchestration(orchestration())
    first = checkpoint("a", "half", 50, 2_000, metrics={"v": 1})
    await store.add_checkpoints([first])
    # The same milestone again, even with other values, in a batch with a new one.
    await store.add_checkpoints([checkpoint("a", "half", 60, 3_000, metrics={"v": 2}), first])
    await store.add_checkpoints([checkpoint("a", "done", 100, 4_000)])
    rows = await store.list_checkpoints("orch-1")
    assert [(r.milestone_name, r.progress_pct, r.metrics) for r in rows] == [
        ("half", 50.0, {"v": 1}),
        ("done", 100.0, {}),
    ]


async def test_timestamp_unix_is_the_callers_milliseconds(store: Store) -> None:
    await store.create_orchestration(orchestration())
    ms = 1_733_000_000_123  # does not fit in 32 bits; 2024-11-30
    await store.add_checkpoints([checkpoint("a", "m", 10, ms)])
    (row,) = await store.list_checkpoints("orch-1")
    assert row.timestamp_unix == ms


async def test_progress_outside_0_100_is_refused(store: Store) -> None:
    await store.create_orchestration(orchestration())
    with pytest.raises(DatabaseError):
        await store.add_checkpoints([checkpoint("a", "m", 101, 1)])


async def test_latest_progress_per_scenario(store: Store) -> None:
    await store.create_orchestration(orchestration())
    await store.create_orchestration(orchestration("other"))
    await store.add_checkpoints(
        [
            checkpoint("b", "start", 0, 1_000),
            checkpoint("a", "start", 0, 1_000),
            checkpoint("a", "done", 100, 3_000, metrics={"tokens": 9}),
            checkpoint("a", "half", 50, 2_000),  # arrives late; not the latest
            checkpoint("b", "tie-1", 20, 5_000),
            checkpoint("b", "tie-2", 30, 5_000),  # same time: the later insert wins
            checkpoint("c", "x", 1, 9_999, orch="other"),
        ]
    )
    progress = await store.latest_progress("orch-1")
    assert [
        (p.scenario_id, p.milestone_name, p.progress_pct, p.timestamp_unix) for p in progress
    ] == [
        ("a", "done", 100.0, 3_000),
        ("b", "tie-2", 30.0, 5_000),
    ]
    assert progress[0].metrics == {"tokens": 9}
    assert await store.latest_progress("nobody") == []


async def _until_status(store: Store, orch_id: str, wanted: str, within_s: float) -> str:
    """Poll the stored status (time passing is what is tested: the lease runs out)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        row = await store.get_orchestration(orch_id)
        assert row is not None
        if row.status == wanted or asyncio.get_running_loop().time() > deadline:
            return row.status
        await asyncio.sleep(0.05)


async def test_a_run_whose_coordinator_stops_heartbeating_reads_back_as_lost(store: Store) -> None:
    created = await store.create_orchestration(orchestration(lease_s=0.4))
    assert created.status == "running" and created.last_seen_at is not None
    assert await _until_status(store, "orch-1", "lost", 5.0) == "lost"
    lost = await store.get_orchestration("orch-1")
    assert lost is not None and lost.last_seen_at == created.last_seen_at
    assert [r.status for r in await store.list_orchestrations()] == ["lost"]
    # It comes back (a long database outage, not a crash): running again.
    await store.heartbeat_orchestration("orch-1")
    back = await store.get_orchestration("orch-1")
    assert back is not None and back.status == "running"
    assert back.last_seen_at is not None and back.last_seen_at > created.last_seen_at


async def test_a_finished_run_is_never_lost(store: Store) -> None:
    await store.create_orchestration(orchestration(lease_s=0.2))
    await store.finish_orchestration("orch-1", "completed", {})
    await store.heartbeat_orchestration("orch-1")  # a late beat changes nothing
    assert await _until_status(store, "orch-1", "lost", 0.6) == "completed"


async def test_a_resume_takes_over_only_a_run_no_live_coordinator_owns(store: Store) -> None:
    launch = {"config_path": "/tmp/c.json", "options": {"max_attempts": 2}}
    await store.create_orchestration(orchestration(lease_s=0.3, launch=launch))
    assert await store.reopen_orchestration("orch-1", "host-b", 30.0) is None  # alive
    assert await _until_status(store, "orch-1", "lost", 5.0) == "lost"
    taken = await store.reopen_orchestration("orch-1", "host-b", 30.0)
    assert taken is not None and taken.status == "running" and taken.host == "host-b"
    assert taken.launch == launch and taken.lease_s == 30.0 and taken.ended_at is None
    assert await store.reopen_orchestration("orch-1", "host-c", 30.0) is None  # b owns it now
    finished = await store.finish_orchestration("orch-1", "failed", {"n": 1})
    assert finished.ended_at is not None
    again = await store.reopen_orchestration("orch-1", "host-c", 30.0)
    assert again is not None and again.ended_at is None and again.host == "host-c"
    with pytest.raises(OrchestrationNotFoundError):
        await store.reopen_orchestration("nobody", "host-c", 30.0)


async def test_attempts_and_carry_round_trip(store: Store) -> None:
    await store.create_orchestration(orchestration())
    carry = {"turns_done": 1, "session_exists": True, "log": [{"attempt": 1, "error": "x"}]}
    await store.upsert_instances([instance("a", attempts=2, carry=carry)])
    (row,) = await store.list_instances("orch-1")
    assert row.attempts == 2 and row.carry == carry


async def test_pool_entries_round_trip_filter_and_order(store: Store) -> None:
    await store.create_orchestration(orchestration())
    await store.create_orchestration(orchestration("orch-2"))
    base = 1_800_000_000.0
    entries = [
        PoolEntry(
            "orch-1", "a", Kind.FILE, "wrote", "src/app.py", base + 10, affects=("src/app.py",)
        ),
        PoolEntry("orch-1", "b", Kind.TEST, "failed", "pytest (1 failed)", base + 5, seq=3),
        PoolEntry(
            "orch-1",
            "a",
            Kind.DECLARED,
            "blocked",
            "needs the API",
            base + 20,
            topic="blog",
            affects=("a.py", "b.py"),
            blocks=("b",),
        ),
        PoolEntry("orch-2", "a", Kind.COMMAND, "ran", "ls", base),
    ]
    await store.add_pool_entries(entries)
    await store.add_pool_entries([])
    await store.add_pool_entries(entries[:2])  # a flush done again: stored once
    got = await store.list_pool_entries("orch-1")
    assert [(e.instance, e.kind, e.at_unix) for e in got] == [
        ("b", Kind.TEST, base + 5),
        ("a", Kind.FILE, base + 10),
        ("a", Kind.DECLARED, base + 20),
    ]
    assert got[1] == entries[0] and got[2] == entries[2] and got[0] == entries[1]
    since = await store.list_pool_entries("orch-1", since=datetime.fromtimestamp(base + 10, UTC))
    assert [e.at_unix for e in since] == [base + 10, base + 20]
    only_b = await store.list_pool_entries("orch-1", instance="b")
    assert [e.summary for e in only_b] == ["pytest (1 failed)"]
    with pytest.raises(DatabaseError):
        await store.add_pool_entries([PoolEntry("nope", "a", Kind.COMMAND, "ran", "ls", base)])


async def test_measures_round_trip_and_are_replaced_by_the_next_snapshot(store: Store) -> None:
    await store.create_orchestration(orchestration())
    (fresh,) = await _upsert_and_read(store, instance("a"))
    assert fresh.measures == {}  # a row written without measures (and rows before 007)
    measures = {
        "quality": {
            "score": 0.75,
            "expected": 0.8,
            "met": False,
            "source": "junit",
            "metrics": {"tests": 4.0, "passed": 3.0},
            "ran_after": "completed",
            "verify": {
                "argv": ["python", "-m", "pytest"],
                "exit_code": 1,
                "duration_s": 0.8,
                "timed_out": False,
                "junit": {"tests": 4, "failures": 1, "errors": 0, "skipped": 0},
            },
        },
        "memory": {"peak_mb": 301.5, "limit_mb": 256, "exceeded_at_s": 1.2},
        "time_budget": {"seconds": 60, "exceeded_at_s": None, "enforced": False},
        "tools": {"Bash": {"calls": 2, "errors": 1, "denials": 0, "tokens": 1234}},
        "series": [[0.0, 0, 0.0, 0.0, 0.0], [1.5, 1234, 0.01, 301.5, 50.0]],
    }
    (row,) = await _upsert_and_read(store, instance("a", measures=measures))
    assert row.measures == measures
    later = {**measures, "quality": None}
    (row,) = await _upsert_and_read(store, instance("a", measures=later))
    assert row.measures == later


async def _upsert_and_read(store: Store, row: InstanceRow) -> list[InstanceRow]:
    await store.upsert_instances([row])
    return await store.list_instances(row.orchestration_id)
