from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import pytest

from coordinator.db import open_store
from coordinator.db.memory import MemoryStore
from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.db.store import DatabaseUnavailableError
from coordinator.db.writer import BatchedWriter
from tests.pg import DedicatedServer

ORCH = OrchestrationRow(id="o", status="running", host="h", sync_mode="none")


def inst(name: str, turns: int) -> InstanceRow:
    return InstanceRow(orchestration_id="o", name=name, status="running", turns=turns)


def cp(scenario: str, i: int, pct: float = 1.0) -> CheckpointRow:
    return CheckpointRow(
        orchestration_id="o",
        scenario_id=scenario,
        milestone_name=f"m{i}",
        progress_pct=pct,
        timestamp_unix=1_700_000_000_000 + i,
    )


class FakeStore(MemoryStore):
    """A MemoryStore that records each write call and can be switched off like a server."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.instance_batches: list[list[InstanceRow]] = []
        self.checkpoint_batches: list[list[CheckpointRow]] = []

    def _check(self) -> None:
        if self.down:
            raise DatabaseUnavailableError("write: database unavailable: connection refused")

    async def upsert_instances(self, rows: Sequence[InstanceRow]) -> None:
        self._check()
        self.instance_batches.append(list(rows))
        await super().upsert_instances(rows)

    async def add_checkpoints(self, rows: Sequence[CheckpointRow]) -> None:
        self._check()
        self.checkpoint_batches.append(list(rows))
        await super().add_checkpoints(rows)


@pytest.fixture
async def fake() -> FakeStore:
    store = FakeStore()
    await store.create_orchestration(ORCH)
    return store


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on the writer's counters (polled; bounded by ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (nothing to subscribe to)
            await asyncio.sleep(0.005)


async def test_instance_snapshots_are_coalesced(fake: FakeStore) -> None:
    async with BatchedWriter(fake, max_latency=60) as writer:
        for turn in range(100):
            for name in ("a", "b", "c"):
                writer.submit_instance(inst(name, turn))
        assert writer.stats().pending_instances == 3
        assert await writer.flush()
    assert [len(b) for b in fake.instance_batches] == [3]
    assert {r.name: r.turns for r in await fake.list_instances("o")} == {"a": 99, "b": 99, "c": 99}
    stats = writer.stats()
    assert (stats.written_instances, stats.pending, stats.failures) == (3, 0, 0)


async def test_checkpoints_are_written_in_batches_in_order(fake: FakeStore) -> None:
    async with BatchedWriter(fake, max_batch=10, max_latency=60) as writer:
        for i in range(25):
            writer.submit_checkpoint(cp("a", i))
        assert await writer.flush()
    assert [len(b) for b in fake.checkpoint_batches] == [10, 10, 5]
    written = [r.milestone_name for b in fake.checkpoint_batches for r in b]
    assert written == [f"m{i}" for i in range(25)]
    assert writer.stats().written_checkpoints == 25


async def test_written_after_max_latency_without_flush(fake: FakeStore) -> None:
    async with BatchedWriter(fake, max_latency=0.05) as writer:
        started = time.monotonic()
        writer.submit_checkpoint(cp("a", 1))
        writer.submit_checkpoint(cp("a", 2))
        await wait_until(lambda: writer.stats().written_checkpoints == 2)
        assert time.monotonic() - started >= 0.045
    assert [len(b) for b in fake.checkpoint_batches] == [2]


async def test_a_full_batch_does_not_wait_for_the_latency(fake: FakeStore) -> None:
    async with BatchedWriter(fake, max_batch=5, max_latency=3600) as writer:
        for i in range(5):
            writer.submit_checkpoint(cp("a", i))
        await wait_until(lambda: writer.stats().written_checkpoints == 5)


async def test_flush_covers_rows_submitted_before_it(fake: FakeStore) -> None:
    async with BatchedWriter(fake, max_batch=3, max_latency=3600) as writer:
        for i in range(7):
            writer.submit_checkpoint(cp("a", i))
        writer.submit_instance(inst("a", 1))
        assert await writer.flush()
        assert writer.stats().written == 8
        assert len(await fake.list_checkpoints("o")) == 7


async def test_outage_buffers_and_recovers_without_loss(fake: FakeStore) -> None:
    fake.down = True
    writer = BatchedWriter(fake, max_batch=4, max_latency=0.01, retry_initial=0.01, retry_max=0.05)
    writer.start()
    writer.submit_instance(inst("a", 1))
    for i in range(10):
        writer.submit_checkpoint(cp("a", i))
    assert not await writer.flush(timeout=0.2)
    stats = writer.stats()
    assert not stats.healthy and stats.failures > 0 and stats.written == 0
    assert stats.pending == 11
    assert stats.last_error is not None and "unavailable" in stats.last_error
    # Keep submitting during the outage; a newer snapshot replaces the buffered one.
    writer.submit_instance(inst("a", 2))
    for i in range(10, 20):
        writer.submit_checkpoint(cp("b", i))
    fake.down = False
    assert await writer.flush(timeout=10)
    assert await writer.close() == 0
    assert [r.turns for r in await fake.list_instances("o")] == [2]
    assert len(await fake.list_checkpoints("o")) == 20
    stats = writer.stats()
    assert stats.healthy and stats.reconnects == 1 and stats.pending == 0 and stats.dropped == 0


async def test_snapshot_submitted_during_a_failed_write_wins(fake: FakeStore) -> None:
    fake.down = True
    writer = BatchedWriter(fake, max_latency=0, retry_initial=0.01, retry_max=0.02)
    writer.start()
    writer.submit_instance(inst("a", 1))
    await wait_until(lambda: writer.stats().failures >= 1)
    writer.submit_instance(inst("a", 2))  # the stale snapshot 1 must not come back
    fake.down = False
    assert await writer.close() == 0
    assert [r.turns for r in await fake.list_instances("o")] == [2]
    assert [[r.turns for r in b] for b in fake.instance_batches] == [[2]]


async def test_a_refused_row_is_skipped_and_the_rest_written(fake: FakeStore) -> None:
    async with BatchedWriter(fake, max_latency=3600) as writer:
        writer.submit_checkpoint(cp("a", 1))
        writer.submit_checkpoint(cp("a", 2, pct=250))  # violates 0..100
        writer.submit_checkpoint(cp("a", 3))
        assert await writer.flush()
    assert [r.milestone_name for r in await fake.list_checkpoints("o")] == ["m1", "m3"]
    stats = writer.stats()
    assert stats.dropped == 1 and stats.written_checkpoints == 2 and stats.healthy


async def test_close_gives_up_after_timeout_and_reports_what_is_left(fake: FakeStore) -> None:
    fake.down = True
    writer = BatchedWriter(fake, max_latency=0, retry_initial=0.01, retry_max=0.02)
    writer.start()
    for i in range(5):
        writer.submit_checkpoint(cp("a", i))
    writer.submit_instance(inst("a", 1))
    assert await writer.close(timeout=0.1) == 6
    writer.submit_checkpoint(cp("a", 99))  # after close: counted, never raised
    assert writer.stats().dropped == 1


@pytest.mark.postgres
async def test_real_server_outage_loses_nothing(pg_dedicated_server: DedicatedServer) -> None:
    """Stop the real server mid-run, keep submitting, start it again: every row lands."""
    server = pg_dedicated_server
    store = await open_store(server.dsn, max_size=2)
    try:
        await store.create_orchestration(ORCH)
        writer = BatchedWriter(
            store, max_batch=50, max_latency=0.02, retry_initial=0.02, retry_max=0.2
        )
        writer.start()
        for i in range(100):
            writer.submit_checkpoint(cp("before", i))
            writer.submit_instance(inst("a", i))
        assert await writer.flush(timeout=30)
        assert writer.stats().healthy

        await asyncio.to_thread(server.stop)
        for i in range(300):
            writer.submit_checkpoint(cp("during", i))
            writer.submit_instance(inst("a", 100 + i))
            writer.submit_instance(inst(f"i{i % 7}", i))
        await wait_until(lambda: writer.stats().failures >= 2, timeout=30)
        assert not writer.stats().healthy
        for i in range(300, 400):  # still submitting while it retries
            writer.submit_checkpoint(cp("during", i))
        assert writer.stats().pending > 0

        await asyncio.to_thread(server.start)
        assert await writer.flush(timeout=60)
        assert await writer.close() == 0
        stats = writer.stats()
        assert stats.healthy and stats.reconnects >= 1 and stats.dropped == 0

        checkpoints = await store.list_checkpoints("o")
        assert len(checkpoints) == 500
        assert {(c.scenario_id, c.milestone_name) for c in checkpoints} == {
            ("before", f"m{i}") for i in range(100)
        } | {("during", f"m{i}") for i in range(400)}
        instances = {r.name: r.turns for r in await store.list_instances("o")}
        newest = {f"i{k}": max(i for i in range(300) if i % 7 == k) for k in range(7)}
        assert instances == {"a": 399, **newest}
    finally:
        await store.close()


@pytest.mark.postgres
async def test_unencodable_rows_are_refused_not_retried(pg_store: PostgresStore) -> None:
    """A value the driver cannot encode is the row's fault, whatever its text says."""
    await pg_store.create_orchestration(ORCH)
    bad_session = InstanceRow(
        orchestration_id="o", name="x", status="connection is closed", session_id="not-a-uuid"
    )
    bad_metrics = CheckpointRow(
        orchestration_id="o",
        scenario_id="a",
        milestone_name="connection is closed",
        progress_pct=1,
        timestamp_unix=1,
        metrics={"n": {1, 2}},  # a set is not JSON
    )
    async with BatchedWriter(pg_store, max_latency=3600) as writer:
        writer.submit_instance(bad_session)
        writer.submit_instance(inst("a", 1))
        writer.submit_checkpoint(bad_metrics)
        writer.submit_checkpoint(cp("a", 1))
        assert await writer.flush(timeout=10)
    stats = writer.stats()
    assert (stats.dropped, stats.written, stats.reconnects) == (2, 2, 0)
    assert [r.name for r in await pg_store.list_instances("o")] == ["a"]
    assert [r.milestone_name for r in await pg_store.list_checkpoints("o")] == ["m1"]
