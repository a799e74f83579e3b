"""Sustained progress writes: BatchedWriter vs one awaited INSERT per row.

    python -m bench.db_writes [--seconds 3] [--instances 50]

Starts a throwaway embedded Postgres (deleted afterwards) and runs two workloads, each
first row-by-row (``await store.add_checkpoints([row])``, one commit per row, the way a
naive engine would write from its hot path) and then through the BatchedWriter (the
producer only calls ``submit_*``, yielding to the loop every ``--chunk`` events; the clock
stops when ``flush()`` returns, so every row counted is committed):

1. checkpoints only: every row is a new milestone, nothing to coalesce;
2. progress events: a checkpoint plus a fresh snapshot of its instance per event (the
   writer coalesces the snapshots; row-by-row writes both).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from coordinator.db import BatchedWriter, MemoryStore, PostgresStore, open_store
from coordinator.db.embedded import ensure_embedded_server, stop_embedded_server
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow

_orchestration_ids = itertools.count()


@dataclass(frozen=True)
class Result:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class Workload:
    def __init__(self, orchestration_id: str, instances: int, with_snapshots: bool) -> None:
        self.orchestration_id = orchestration_id
        self.instances = instances
        self.with_snapshots = with_snapshots

    def event(self, i: int) -> tuple[CheckpointRow, InstanceRow | None]:
        name = f"instance-{i % self.instances:03d}"
        checkpoint = CheckpointRow(
            orchestration_id=self.orchestration_id,
            scenario_id=name,
            milestone_name=f"step-{i // self.instances}",
            progress_pct=float(i % 100),
            timestamp_unix=1_700_000_000_000 + i,
            state_snapshot={"files_changed": i % 7, "last_tool": "Edit"},
            metrics={"input_tokens": i * 3, "output_tokens": i, "cost_usd": i * 1e-5},
        )
        snapshot = None
        if self.with_snapshots:
            snapshot = InstanceRow(
                orchestration_id=self.orchestration_id,
                name=name,
                status="running",
                input_tokens=i * 3,
                output_tokens=i,
                total_tokens=i * 4,
                cost_usd=i * 1e-5,
                tool_calls={"Edit": i % 5, "Bash": i % 3},
                turns=i // self.instances,
                progress_pct=float(i % 100),
            )
        return checkpoint, snapshot


async def new_workload(store: PostgresStore, instances: int, with_snapshots: bool) -> Workload:
    orchestration_id = f"bench-{next(_orchestration_ids)}"
    await store.create_orchestration(
        OrchestrationRow(id=orchestration_id, status="running", host="bench", sync_mode="none")
    )
    return Workload(orchestration_id, instances, with_snapshots)


async def row_by_row(store: PostgresStore, work: Workload, seconds: float) -> Result:
    started = time.perf_counter()
    deadline = started + seconds
    events = 0
    while time.perf_counter() < deadline:
        checkpoint, snapshot = work.event(events)
        await store.add_checkpoints([checkpoint])
        if snapshot is not None:
            await store.upsert_instances([snapshot])
        events += 1
    return Result(events, time.perf_counter() - started)


async def batched(store: PostgresStore, work: Workload, events: int, chunk: int) -> Result:
    writer = BatchedWriter(store, warn_pending=10 * events)  # the backlog is the point here
    writer.start()
    started = time.perf_counter()
    for i in range(events):
        checkpoint, snapshot = work.event(i)
        writer.submit_checkpoint(checkpoint)
        if snapshot is not None:
            writer.submit_instance(snapshot)
        if i % chunk == chunk - 1:
            await asyncio.sleep(0)  # the engine's loop yields between stream lines
    await writer.flush()
    elapsed = time.perf_counter() - started
    assert await writer.close() == 0
    stats = writer.stats()
    assert stats.written_checkpoints == events and stats.dropped == 0, stats
    return Result(events, elapsed)


def submit_cost_us(work: Workload, n: int = 200_000) -> float:
    """Hot-path cost of submit_checkpoint + submit_instance, without any writing."""
    writer = BatchedWriter(MemoryStore(), warn_pending=2 * n)  # never started: no writes
    rows = [work.event(i) for i in range(n)]
    started = time.perf_counter()
    for checkpoint, snapshot in rows:
        writer.submit_checkpoint(checkpoint)
        if snapshot is not None:
            writer.submit_instance(snapshot)
    return (time.perf_counter() - started) / n * 1e6


def report(label: str, unit: str, slow: Result, fast: Result) -> None:
    print(label)
    for name, result in (
        ("one INSERT per row (awaited)", slow),
        ("BatchedWriter (until flushed)", fast),
    ):
        print(
            f"  {name:<30} {result.rate:>9,.0f} {unit}/s"
            f"  ({result.events:,} in {result.seconds:.1f} s)"
        )
    print(f"  ratio: {fast.rate / slow.rate:.1f}x")


async def run(dsn: str, seconds: float, events: int, instances: int, chunk: int) -> None:
    store = await open_store(dsn)
    try:
        async with store.pool.acquire() as conn:
            settings = {
                name: await conn.fetchval("SELECT current_setting($1)", name)
                for name in ("server_version", "synchronous_commit", "fsync")
            }
        print(
            f"embedded Postgres {settings['server_version']} over a unix socket; "
            f"synchronous_commit={settings['synchronous_commit']} fsync={settings['fsync']}"
        )
        print(f"{instances} instances; row-by-row for {seconds:g} s, batched {events:,} events\n")

        cases: list[tuple[str, str, bool]] = [
            ("checkpoints only (nothing to coalesce)", "checkpoints", False),
            ("progress events (checkpoint + instance snapshot each)", "events", True),
        ]
        for label, unit, with_snapshots in cases:
            slow = await row_by_row(
                store, await new_workload(store, instances, with_snapshots), seconds
            )
            fast = await batched(
                store, await new_workload(store, instances, with_snapshots), events, chunk
            )
            report(label, unit, slow, fast)
            print()
        work = Workload("x", instances, with_snapshots=True)
        cost = submit_cost_us(work)
        print(f"hot-path cost of submit_checkpoint + submit_instance: {cost:.2f} µs/event")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="row-by-row runs this long")
    parser.add_argument("--events", type=int, default=100_000, help="batched writes this many")
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=50, help="events submitted between yields")
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="coordinator-bench-pg-"))
    try:
        started = time.perf_counter()
        dsn = ensure_embedded_server(state_dir)
        print(f"server started in {time.perf_counter() - started:.1f} s")
        asyncio.run(run(dsn, args.seconds, args.events, args.instances, args.chunk))
    finally:
        stop_embedded_server(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
