"""A runner's engines write their instance rows through one group-committed statement:
concurrent writes share statements, each row lands only while its claim's epoch holds, the
newest snapshot of a key wins, and one row the database refuses does not sink the rest."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import InstanceRow, OrchestrationRow
from coordinator.errors import DatabaseError
from coordinator.fleet.budgets import Watch, parse_alarm
from coordinator.fleet.rows import FencedRows

pytestmark = pytest.mark.postgres

ORCH = OrchestrationRow(id="orch-rows", status="running", host="h", sync_mode="free")
NAMES = [f"i{n:03d}" for n in range(60)]


async def _claimed(store: PostgresStore, epoch: int = 1) -> None:
    await store.create_orchestration(ORCH)
    await store.upsert_instances([InstanceRow(ORCH.id, n, "pending") for n in NAMES])
    await store.pool.execute("UPDATE instances SET claim_epoch = $1", epoch)


async def test_concurrent_writes_share_statements_and_every_row_lands(
    pg_store: PostgresStore,
) -> None:
    await _claimed(pg_store)
    rows = FencedRows(pg_store.pool)
    results = await asyncio.gather(
        *(
            rows.write(InstanceRow(ORCH.id, n, "running", total_tokens=i + 1), 1)
            for i, n in enumerate(NAMES)
        )
    )
    assert results == [True] * len(NAMES)
    assert rows.stats.rows == len(NAMES)
    assert rows.stats.statements < len(NAMES) / 4, rows.stats  # grouped, not one each
    got = {r.name: r for r in await pg_store.list_instances(ORCH.id)}
    assert {n: (got[n].status, got[n].total_tokens) for n in NAMES} == {
        n: ("running", i + 1) for i, n in enumerate(NAMES)
    }


async def test_a_row_whose_claim_moved_is_not_written_and_the_others_are(
    pg_store: PostgresStore,
) -> None:
    await _claimed(pg_store)
    await pg_store.pool.execute("UPDATE instances SET claim_epoch = 2 WHERE name = 'i001'")
    rows = FencedRows(pg_store.pool)
    a, b = await asyncio.gather(
        rows.write(InstanceRow(ORCH.id, "i000", "running", total_tokens=5), 1),
        rows.write(InstanceRow(ORCH.id, "i001", "running", total_tokens=5), 1),
    )
    assert (a, b) == (True, False)
    got = {r.name: r for r in await pg_store.list_instances(ORCH.id)}
    assert (got["i000"].status, got["i000"].total_tokens) == ("running", 5)
    assert (got["i001"].status, got["i001"].total_tokens) == ("pending", 0)  # the new holder's


async def test_the_newest_snapshot_of_a_key_wins(pg_store: PostgresStore) -> None:
    await _claimed(pg_store)
    rows = FencedRows(pg_store.pool)
    written = await asyncio.gather(
        *(rows.write(InstanceRow(ORCH.id, "i000", "running", total_tokens=t), 1) for t in range(10))
    )
    assert written == [True] * 10
    [row] = [r for r in await pg_store.list_instances(ORCH.id) if r.name == "i000"]
    assert row.total_tokens == 9


async def test_one_refused_row_fails_alone(pg_store: PostgresStore) -> None:
    await _claimed(pg_store)
    rows = FencedRows(pg_store.pool)
    good = [rows.write(InstanceRow(ORCH.id, n, "running", total_tokens=3), 1) for n in NAMES[:5]]
    bad = rows.write(InstanceRow(ORCH.id, "i010", "running", error="nul \x00 byte"), 1)
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:5] == [True] * 5
    assert isinstance(results[5], DatabaseError)
    got = {r.name: r for r in await pg_store.list_instances(ORCH.id)}
    assert [got[n].total_tokens for n in NAMES[:5]] == [3] * 5
    assert got["i010"].status == "pending"


async def test_a_write_racing_a_take_over_waits_for_it_and_is_fenced(
    pg_store: PostgresStore,
) -> None:
    """The take-over's claim (epoch + 1) is in flight, uncommitted, when the old holder's
    write comes: the UPDATE waits for the claim's commit, re-checks the epoch on the new
    row version and writes nothing."""
    await _claimed(pg_store)
    rows = FencedRows(pg_store.pool)
    async with pg_store.pool.acquire() as conn:
        claim = conn.transaction()
        await claim.start()
        await conn.execute("UPDATE instances SET claim_epoch = claim_epoch + 1 WHERE name = 'i000'")
        write = asyncio.ensure_future(
            rows.write(InstanceRow(ORCH.id, "i000", "running", total_tokens=9), 1)
        )
        done, _ = await asyncio.wait({write}, timeout=0.5)
        assert not done, "the write must wait for the take-over's row lock"
        await claim.commit()
    assert await asyncio.wait_for(write, 10.0) is False
    [row] = [r for r in await pg_store.list_instances(ORCH.id) if r.name == "i000"]
    assert (row.status, row.total_tokens) == ("pending", 0)


async def test_a_runs_heartbeat_is_written_once_for_all_the_runners_engines(
    pg_store: PostgresStore,
) -> None:
    await _claimed(pg_store)
    await pg_store.pool.execute(
        "UPDATE orchestrations SET heartbeat_at = now() - interval '1 hour' WHERE id = $1",
        ORCH.id,
    )
    rows = FencedRows(pg_store.pool, beat_gap_s=3600.0)
    await asyncio.gather(*(rows.beat_run(ORCH.id) for _ in range(50)))
    assert rows.beats == 1
    age = await pg_store.pool.fetchval(
        "SELECT extract(epoch FROM now() - heartbeat_at) FROM orchestrations WHERE id = $1",
        ORCH.id,
    )
    assert age < 60, "the one beat must have been written"
    eager = FencedRows(pg_store.pool, beat_gap_s=0.0)
    for _ in range(3):
        await eager.beat_run(ORCH.id)
    assert eager.beats == 3


# ------------------------------------------------------------ budgets watched by the write
CHANNEL = "test_budget_alarm"


async def _heard(pg_store: PostgresStore, rows: FencedRows, *writes: InstanceRow) -> str:
    """What the channel heard from ``writes`` (in one batch): the first notification, or
    ``"nothing"`` when a marker sent after them comes first (notifications arrive in
    commit order)."""
    got: asyncio.Queue[str] = asyncio.Queue()
    async with pg_store.pool.acquire() as conn:
        await conn.add_listener(CHANNEL, lambda *a: got.put_nowait(a[3]))
        try:
            await asyncio.gather(*(rows.write(w, 1) for w in writes))
            await pg_store.pool.execute("SELECT pg_notify($1, 'nothing')", CHANNEL)
            return await asyncio.wait_for(got.get(), 10)
        finally:
            await conn.reset()


def _watched(pg_store: PostgresStore, *watch: Watch) -> tuple[FencedRows, list[tuple[str, str]]]:
    crossed: list[tuple[str, str]] = []
    rows = FencedRows(
        pg_store.pool,
        watching=lambda: watch,
        alarm_channel=CHANNEL,
        on_crossed=lambda run, key: crossed.append((run, key)),
    )
    return rows, crossed


async def test_the_write_that_crosses_a_run_budget_notifies_it_at_commit(
    pg_store: PostgresStore,
) -> None:
    await _claimed(pg_store)
    rows, crossed = _watched(pg_store, Watch(ORCH.id, "overall", 100, True, True, None))
    # 40 + 30 (cache creation) = 70 of 100: not crossed
    below = InstanceRow(ORCH.id, "i000", "running", input_tokens=40, cache_creation_tokens=30)
    assert await _heard(pg_store, rows, below) == "nothing"
    assert crossed == []
    # another instance's 31 takes the run to 101 (the first row counted as committed)
    over = InstanceRow(ORCH.id, "i001", "running", output_tokens=31)
    heard = await _heard(pg_store, rows, over)
    assert heard == f"{ORCH.id}\toverall\t101"
    assert parse_alarm(heard) == (ORCH.id, "overall", 101.0)  # what the runners read
    assert crossed == [(ORCH.id, "overall")]
    got = {r.name: r for r in await pg_store.list_instances(ORCH.id)}
    assert got["i001"].output_tokens == 31  # the rows are written all the same


async def test_a_watch_counts_what_its_budget_counts(pg_store: PostgresStore) -> None:
    await _claimed(pg_store)
    cached = InstanceRow(ORCH.id, "i000", "running", input_tokens=10, cache_read_tokens=500)
    cmd = frozenset({"i001", "i002"})
    rows, crossed = _watched(
        pg_store,
        Watch(ORCH.id, "overall", 100, True, False, None),  # cache reads not counted
        Watch(ORCH.id, "command:/x:usd", 1.0, False, True, cmd),  # i001 + i002's cost
        Watch("another-run", "overall", 1, True, True, None),  # no row of it written
    )
    outside = InstanceRow(ORCH.id, "i003", "running", cost_usd=5.0)
    assert await _heard(pg_store, rows, cached, outside) == "nothing"
    inside = InstanceRow(ORCH.id, "i001", "running", cost_usd=0.75)
    assert await _heard(pg_store, rows, inside) == "nothing"
    inside2 = InstanceRow(ORCH.id, "i002", "running", cost_usd=0.5)
    assert await _heard(pg_store, rows, inside2) == f"{ORCH.id}\tcommand:/x:usd\t1.25"
    assert crossed == [(ORCH.id, "command:/x:usd")]


async def test_a_fenced_write_does_not_notify_its_crossing(pg_store: PostgresStore) -> None:
    await _claimed(pg_store)
    await pg_store.pool.execute("UPDATE instances SET claim_epoch = 2 WHERE name = 'i000'")
    rows, crossed = _watched(pg_store, Watch(ORCH.id, "overall", 100, True, True, None))
    stale = InstanceRow(ORCH.id, "i000", "running", input_tokens=1000)
    assert await _heard(pg_store, rows, stale) == "nothing"
    assert crossed == []
