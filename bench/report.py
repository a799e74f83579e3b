"""The report of a 1,000-instance run from Postgres: load, compare, terminal, HTML.

    python -m bench.report [--instances 1000] [--repeat 5]

Starts a throwaway embedded Postgres (deleted afterwards), stores one finished run of
``--instances`` instances over three tiers (its results document with measures, its
instance rows and three checkpoints per instance) and one still running (rows and
checkpoints only), then times, as ``coordinator report`` does them: loading the run from
the database, the comparison, the terminal table, loading what the charts also need (the
checkpoints) and the HTML page, each on its own (median of ``--repeat``). Target: load +
compare under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from coordinator.db import PostgresStore, open_store
from coordinator.db.embedded import ensure_embedded_server, stop_embedded_server
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.report.compare import compare
from coordinator.report.html import render_html
from coordinator.report.load import facts_from_store
from coordinator.report.section import comparison_section
from coordinator.report.terminal import render_comparison

T = TypeVar("T")
TIERS = (("simple", 1.0, 0.9), ("medium", 3.0, 0.85), ("complex", 8.0, 0.8))
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def instance_doc(k: int) -> dict[str, Any]:
    difficulty, mult, expected = TIERS[k % 3]
    duration = 20.0 * mult ** (0.8 + 0.1 * (k % 5))
    tokens = int(5_000 * mult**1.3) + k
    cost = tokens * 2e-6
    start = T0 + timedelta(seconds=k % 60)
    score = 1.0 - 0.05 * mult * ((k % 7) / 7)
    return {
        "name": f"inst-{k:04d}",
        "description": f"{difficulty} tier, item {k}",
        "status": "completed" if k % 50 else "failed",
        "started_at": start.isoformat(),
        "ended_at": (start + timedelta(seconds=duration)).isoformat(),
        "duration_s": duration,
        "wait_s": 1.5,
        "paused_s": 0.0,
        "sync_waits": [{"point": "milestone:50", "waited_s": 1.5, "timed_out": False}],
        "total_tokens": tokens,
        "total_cost_usd": cost,
        "tool_calls": {"Bash": 3, "Write": 2},
        "progress_pct": 100.0,
        "milestones": [
            {
                "pct": p,
                "at": (start + timedelta(seconds=duration * p / 100)).isoformat(),
                "elapsed_s": duration * p / 100,
            }
            for p in (30, 50, 70, 90)
        ],
        "scenario": {
            "difficulty": difficulty,
            "complexity_multiplier": mult,
            "input_size": int(mult),
            "time_budget_seconds": 600.0,
            "expected_quality": expected,
        },
        "measures": {
            "quality": {
                "score": score,
                "expected": expected,
                "met": score >= expected,
                "source": "junit",
                "metrics": {},
                "ran_after": "completed",
                "verify": {
                    "argv": ["pytest"],
                    "exit_code": 0,
                    "duration_s": 1.0,
                    "timed_out": False,
                    "junit": {"tests": 8, "failures": 0, "errors": 0, "skipped": 0},
                },
            },
            "memory": {"peak_mb": 100.0 * mult, "limit_mb": 1024.0, "exceeded_at_s": None},
            "time_budget": {"seconds": 600.0, "exceeded_at_s": None, "enforced": False},
            "tools": {"Bash": {"calls": 3, "errors": 0, "denials": 0, "tokens": tokens // 2}},
            "series": [
                [duration * f, tokens * f, cost * f, 50.0 * mult, 100 * f]
                for f in (0.0, 0.25, 0.5, 0.75, 1.0)
            ],
        },
    }


async def store_runs(store: PostgresStore, n: int) -> None:
    docs = [instance_doc(k) for k in range(n)]
    config = {
        "instances": [{"name": d["name"], "command": "go", "scenario": d["scenario"]} for d in docs]
    }
    for orch_id, finished in (("bench-report-done", True), ("bench-report-live", False)):
        await store.create_orchestration(
            OrchestrationRow(orch_id, "running", "bench", "milestone", config)
        )
        rows, checkpoints = [], []
        for d in docs:
            start = datetime.fromisoformat(d["started_at"])
            rows.append(
                InstanceRow(
                    orch_id,
                    d["name"],
                    d["status"],
                    total_tokens=d["total_tokens"],
                    cost_usd=d["total_cost_usd"],
                    tool_calls=d["tool_calls"],
                    wait_s=d["wait_s"],
                    progress_pct=100.0,
                    started_at=start,
                    ended_at=start + timedelta(seconds=d["duration_s"]),
                )
            )
            for label, frac in (("started", 0.0), ("50%", 0.5), ("completed", 1.0)):
                checkpoints.append(
                    CheckpointRow(
                        orch_id,
                        d["name"],
                        label,
                        100 * frac,
                        int((start.timestamp() + frac * d["duration_s"]) * 1000),
                        metrics={
                            "total_tokens": int(frac * d["total_tokens"]),
                            "cost_usd": frac * d["total_cost_usd"],
                        },
                    )
                )
        await store.upsert_instances(rows)
        await store.add_checkpoints(checkpoints)
        if finished:
            results = {
                "schema_version": 1,
                "orchestration_id": orch_id,
                "started_at": T0.isoformat(),
                "duration_s": 700.0,
                "exit_code": 1,
                "interrupted": False,
                "instances": docs,
            }
            results["comparison"] = comparison_section(results)
            await store.finish_orchestration(orch_id, "failed", results)


async def timed(func: Callable[[], Awaitable[T]], repeat: int) -> tuple[float, T]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = await func()
        times.append(time.perf_counter() - started)
    assert value is not None
    return statistics.median(times), value


async def run(dsn: str, n: int, repeat: int) -> None:
    store = await open_store(dsn)
    try:
        started = time.perf_counter()
        await store_runs(store, n)
        print(f"stored two runs of {n:,} instances in {time.perf_counter() - started:.1f} s\n")
        for orch_id, what in (
            ("bench-report-done", "finished run (stored results)"),
            ("bench-report-live", "running run (rows + checkpoints)"),
        ):

            async def load(i: str = orch_id) -> Any:
                return await facts_from_store(store, i, over_time=False)

            async def load_charts(i: str = orch_id) -> Any:
                return await facts_from_store(store, i)  # + tokens/cost at each checkpoint

            load_s, facts = await timed(load, repeat)
            charts_s, facts = await timed(load_charts, repeat)

            async def do_compare(f: Any = facts) -> Any:
                return compare(f)

            compare_s, comp = await timed(do_compare, repeat)

            async def terminal(c: Any = comp) -> int:
                console = Console(file=io.StringIO(), width=160)
                console.print(render_comparison(c))
                return 1

            async def page(f: Any = facts, c: Any = comp) -> int:
                return len(render_html(f, c))

            term_s, _ = await timed(terminal, repeat)
            html_s, size = await timed(page, repeat)
            total = load_s + compare_s
            print(what)
            print(f"  load from Postgres   {load_s * 1000:8.1f} ms")
            print(f"  compare              {compare_s * 1000:8.1f} ms")
            print(
                f"  load + compare       {total * 1000:8.1f} ms  "
                f"(target < 1000 ms: {'met' if total < 1 else 'MISSED'})"
            )
            print(f"  terminal table       {term_s * 1000:8.1f} ms")
            print(f"  load for the charts  {charts_s * 1000:8.1f} ms  (with the checkpoints)")
            print(f"  HTML page            {html_s * 1000:8.1f} ms  ({size / 1e6:.1f} MB)")
            print()
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="coordinator-bench-pg-"))
    state_dir.chmod(0o755)  # as root the pgserver user must reach it (see tests/pg.py)
    try:
        started = time.perf_counter()
        dsn = ensure_embedded_server(state_dir)
        print(f"server started in {time.perf_counter() - started:.1f} s")
        asyncio.run(run(dsn, args.instances, args.repeat))
    finally:
        stop_embedded_server(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
