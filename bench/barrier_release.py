"""Barrier release latency: the NOTIFY barrier vs a naive 0.5 s polling barrier.

    python -m bench.barrier_release [--rounds 200] [--naive-rounds 10] [--sizes 3,30,100]

Starts a throwaway embedded Postgres (deleted afterwards). Per size n and round, n-1
participants (asyncio tasks of one "waiter process") arrive and wait; once they are all
waiting, the LAST participant arrives and the clock runs from just before its ``arrive()``
until every ``wait()`` (its own included) has returned. Reported: p50 / p99 / max.

- ``notify, other process``: the last participant lives in a second PostgresBarrier (own
  pool, own LISTEN connection), so the waiters learn of the release only through
  NOTIFY -> the waiter process's single listener -> one re-read -> fan-out to all local
  waiters. This is the cross-process path and the headline figure.
- ``notify, same process``: the last participant shares the waiters' PostgresBarrier,
  which hands its own release to local waiters without the NOTIFY round trip.
- ``naive poll 0.5 s``: each waiter polls ``count(*)`` of arrivals every 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from coordinator.barrier import PostgresBarrier
from coordinator.db.embedded import ensure_embedded_server, stop_embedded_server
from coordinator.db.migrations import migrate_dsn
from coordinator.db.postgres import create_pool

TARGET_P99_MS = 50.0
NAIVE_POLL_S = 0.5
SETTLE_S = 0.02  # let every waiter finish its first read before the last arrival
_ids = itertools.count()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "rounds": len(ms),
    }


Arrive = Callable[[str, str], Awaitable[None]]
Wait = Callable[[str, str], Awaitable[object]]


async def one_round(
    names: list[str], point: str, arrive: Arrive, wait: Wait, last_arrive: Arrive, last_wait: Wait
) -> float:
    """Seconds from the last arrival to the moment the last ``wait()`` returned."""
    waiting = 0
    all_waiting = asyncio.Event()
    resumed: list[float] = []

    async def participant(name: str) -> None:
        nonlocal waiting
        await arrive(name, point)
        waiting += 1
        if waiting == len(names) - 1:
            all_waiting.set()
        await wait(name, point)
        resumed.append(time.perf_counter())

    tasks = [asyncio.create_task(participant(n)) for n in names[:-1]]
    await all_waiting.wait()
    await asyncio.sleep(SETTLE_S)
    assert not resumed, "released before the last arrival"
    started = time.perf_counter()
    await last_arrive(names[-1], point)
    await last_wait(names[-1], point)
    resumed.append(time.perf_counter())
    await asyncio.gather(*tasks)
    return max(resumed) - started


async def notify_rounds(dsn: str, n: int, rounds: int, same_process: bool) -> list[float]:
    names = [f"p{i:03d}" for i in range(n)]
    orchestration_id = f"bench-{next(_ids)}"

    async def open_one() -> PostgresBarrier:
        return await PostgresBarrier.open(
            dsn,
            orchestration_id,
            mode="lockstep",
            participants=names,
            timeout_s=60.0,
            run_migrations=False,
        )

    waiters = await open_one()
    last = waiters if same_process else await open_one()
    try:
        await waiters.register(names[:-1])
        await last.register(names[-1:])
        latencies = []
        for r in range(rounds):
            latencies.append(
                await one_round(
                    names, f"step:{r + 1}", waiters.arrive, waiters.wait, last.arrive, last.wait
                )
            )
        return latencies
    finally:
        if last is not waiters:
            await last.close()
        await waiters.close()


class NaivePollingBarrier:
    """Every waiter asks "has everyone arrived?" every 0.5 s."""

    def __init__(self, pool: asyncpg.Pool, key: str, n: int) -> None:
        self.pool, self.key, self.n = pool, key, n

    async def arrive(self, name: str, point: str) -> None:
        await self.pool.execute(
            "INSERT INTO bench_naive_arrivals (key, point, name) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            self.key,
            point,
            name,
        )

    async def wait(self, name: str, point: str) -> None:
        while True:
            count = await self.pool.fetchval(
                "SELECT count(*) FROM bench_naive_arrivals WHERE key = $1 AND point = $2",
                self.key,
                point,
            )
            if count >= self.n:
                return
            await asyncio.sleep(NAIVE_POLL_S)


async def naive_rounds(pool: asyncpg.Pool, n: int, rounds: int) -> list[float]:
    names = [f"p{i:03d}" for i in range(n)]
    barrier = NaivePollingBarrier(pool, f"bench-{next(_ids)}", n)
    return [
        await one_round(
            names, f"step:{r + 1}", barrier.arrive, barrier.wait, barrier.arrive, barrier.wait
        )
        for r in range(rounds)
    ]


async def run(dsn: str, sizes: list[int], rounds: int, naive: int) -> dict[str, object]:
    await migrate_dsn(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=8)
    try:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS bench_naive_arrivals "
            "(key text, point text, name text, PRIMARY KEY (key, point, name))"
        )
        version = await pool.fetchval("SELECT current_setting('server_version')")
        print(f"embedded Postgres {version}; release latency = last arrive() -> all wait()s")
        print(
            f"{'participants':>12}  {'barrier':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  rounds"
        )
        results: dict[str, dict[str, dict[str, float]]] = {
            "notify_other_process": {},
            "notify_same_process": {},
            "naive_poll_0.5s": {},
        }
        for n in sizes:
            cases: list[tuple[str, str, Awaitable[list[float]]]] = [
                (
                    "notify_other_process",
                    "notify, other process",
                    notify_rounds(dsn, n, rounds, False),
                ),
                (
                    "notify_same_process",
                    "notify, same process",
                    notify_rounds(dsn, n, rounds, True),
                ),
                ("naive_poll_0.5s", "naive poll 0.5 s", naive_rounds(pool, n, naive)),
            ]
            for key, label, work in cases:
                stats = summary(await work)
                results[key][str(n)] = stats
                print(
                    f"{n:>12}  {label:<26}{stats['p50_ms']:>9.1f}{stats['p99_ms']:>9.1f}"
                    f"{stats['max_ms']:>9.1f}  {stats['rounds']:.0f}"
                )
    finally:
        await pool.close()
    largest = str(max(sizes))
    p99 = results["notify_other_process"][largest]["p99_ms"]
    return {
        "bench": "barrier_release",
        **results,
        "target": f"p99 < {TARGET_P99_MS:g} ms at {largest} participants (notify, other process)",
        "target_met": p99 < TARGET_P99_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200, help="rounds per size (notify)")
    parser.add_argument("--naive-rounds", type=int, default=10, help="rounds per size (naive)")
    parser.add_argument("--sizes", default="3,30,100", help="participant counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < 2:
        parser.error("every size needs at least 2 participants")
    state_dir = Path(tempfile.mkdtemp(prefix="coordinator-bench-pg-"))
    try:
        started = time.perf_counter()
        dsn = ensure_embedded_server(state_dir)
        print(f"server started in {time.perf_counter() - started:.1f} s")
        outcome = asyncio.run(run(dsn, sizes, args.rounds, args.naive_rounds))
    finally:
        stop_embedded_server(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    print(json.dumps(outcome, separators=(",", ":")))


if __name__ == "__main__":
    main()
