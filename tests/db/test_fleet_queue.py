"""The queue contract, against pgqueuer on real Postgres and against the in-memory twin:
capacity per owner, labels by queue, not-before times, stale claims taken over after the
lease, done and hand-back. Also: pgqueuer's schema installs beside our migrations, twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from coordinator.fleet.queue import MemoryQueue, PgQueue, Queue, QueuedJob, install_queue
from coordinator.fleet.rules import JobPayload

pytestmark = [pytest.mark.postgres]


@pytest.fixture(params=["pgqueuer", "memory"])
async def queue(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[Queue]:
    if request.param == "memory":
        yield MemoryQueue()
        return
    await install_queue(pg_dsn)
    pg = await PgQueue.open(pg_dsn)
    try:
        yield pg
    finally:
        await pg.close()


def jobs(n: int, entrypoint: str = "coordinator", delay: float = 0.0) -> list[QueuedJob]:
    return [QueuedJob(entrypoint, JobPayload("o", f"w{i}"), delay) for i in range(n)]


async def test_capacity_per_owner_and_done(queue: Queue) -> None:
    await queue.enqueue(jobs(5))
    a, b = uuid.uuid4(), uuid.uuid4()
    got_a = await queue.claim(["coordinator"], a, 2, 30)
    assert [j.payload for j in got_a] == [JobPayload("o", "w0"), JobPayload("o", "w1")]
    assert await queue.claim(["coordinator"], a, 2, 30) == []  # full
    got_b = await queue.claim(["coordinator"], b, 10, 30)
    assert {j.payload.instance for j in got_b if j.payload} == {"w2", "w3", "w4"}
    await queue.done(got_a[:1])
    again = await queue.claim(["coordinator"], a, 2, 30)
    assert again == []  # nothing queued is left; the done one is gone


async def test_a_claim_takes_at_most_its_batch(queue: Queue) -> None:
    """A runner whose slots are still taken by instances whose jobs are done (finishing
    their bookkeeping) asks for its free slots only, not its whole capacity."""
    await queue.enqueue(jobs(5))
    me = uuid.uuid4()
    assert len(await queue.claim(["coordinator"], me, 4, 30, batch=1)) == 1
    assert len(await queue.claim(["coordinator"], me, 4, 30, batch=9)) == 3  # capacity
    assert await queue.claim(["coordinator"], me, 4, 30, batch=2) == []


async def test_labels_are_queues(queue: Queue) -> None:
    await queue.enqueue(jobs(1, "coordinator:gpu"))
    assert await queue.claim(["coordinator"], uuid.uuid4(), 5, 30) == []
    got = await queue.claim(["coordinator", "coordinator:gpu"], uuid.uuid4(), 5, 30)
    assert len(got) == 1


async def test_not_before(queue: Queue) -> None:
    await queue.enqueue(jobs(1, delay=0.6))
    me = uuid.uuid4()
    assert await queue.claim(["coordinator"], me, 5, 30) == []
    await asyncio.sleep(0.8)  # the clock must pass the not-before time (nothing to poll)
    assert len(await queue.claim(["coordinator"], me, 5, 30)) == 1


async def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_not(queue: Queue) -> None:
    await queue.enqueue(jobs(2))
    dead, live, taker = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    [lost] = await queue.claim(["coordinator"], dead, 1, 0.5)
    [kept] = await queue.claim(["coordinator"], live, 1, 0.5)
    await asyncio.sleep(0.7)  # past the lease of both; only `live` beats
    await queue.heartbeat([kept])
    got = await queue.claim(["coordinator"], taker, 5, 0.5)
    assert [j.id for j in got] == [lost.id]


async def test_hand_back_queues_it_again(queue: Queue) -> None:
    await queue.enqueue(jobs(1))
    a, b = uuid.uuid4(), uuid.uuid4()
    [job] = await queue.claim(["coordinator"], a, 1, 30)
    assert await queue.claim(["coordinator"], b, 1, 30) == []
    await queue.hand_back([job])
    [again] = await queue.claim(["coordinator"], b, 1, 30)
    assert again.id == job.id


async def test_install_is_idempotent_and_beside_our_schema(pg_dsn: str) -> None:
    await asyncio.gather(install_queue(pg_dsn), install_queue(pg_dsn))  # two hosts at once
    await install_queue(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    finally:
        await conn.close()
    assert {"pgqueuer", "pgqueuer_log", "runners", "instances", "orchestrations"} <= tables


async def test_budget_use_sums_what_the_rows_sum(pg_store: object) -> None:
    """The runners' budget poll reads sums, not rows: they must be the rows' sums (the
    whole run, each budgeted command, the hosted instances' own rows)."""
    from datetime import UTC, datetime
    from pathlib import Path

    from coordinator.config import parse_config
    from coordinator.db.postgres import PostgresStore
    from coordinator.db.rows import InstanceRow, OrchestrationRow
    from coordinator.fleet.budgets import RunUse, command_groups
    from coordinator.fleet.store import FleetDb
    from coordinator.plan import RunOptions, build_plan

    assert isinstance(pg_store, PostgresStore)
    config = parse_config(
        {
            "orchestration": {"budget": {"overall_tokens": 9, "command_budgets": {"/x": 9}}},
            "instances": [
                {"name": "a", "command": "/x go"},
                {"name": "b", "command": "/x go"},
                {"name": "c", "command": "/y go"},
                {"name": "d", "command": "plain"},
            ],
        }
    )
    plan = build_plan(
        config,
        RunOptions(orchestration_id="use"),
        claude_bin="claude",
        config_path=None,
        cwd=Path("/tmp"),
        now=datetime.now(UTC),
    )
    await pg_store.create_orchestration(OrchestrationRow("use", "running", "h", "free"))
    rows = {
        name: InstanceRow(
            "use",
            name,
            "running",
            input_tokens=10 * k,
            output_tokens=k,
            cache_read_tokens=100 * k,
            cache_creation_tokens=3,
            cost_usd=0.5 * k,
        )
        for k, name in enumerate("abc", start=1)  # d has no row yet
    }
    await pg_store.upsert_instances(list(rows.values()))
    got = await FleetDb(pg_store.pool).budget_use("use", command_groups(plan), ["a", "d"])
    want = RunUse.of_rows(plan, rows, ["a", "d"])
    assert got == want
    assert got.commands.keys() == {"/x"}  # /y has no budget: not asked for
    assert got.overall.tokens == sum(
        r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_creation_tokens
        for r in rows.values()
    )
