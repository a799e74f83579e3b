"""Barrier arrivals survive a database outage: an instance that reaches a milestone while
Postgres is away is recorded when it comes back, and is never listed as missing.

Milestone sync over real Postgres, a real coordinator process, replay instances. ``a`` and
``b`` cross 30% while the server is stopped, and finish; ``c`` keeps the run going until
the test has seen the server back; then it finishes too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coordinator.barrier.postgres import read_points
from coordinator.db.postgres import connect
from tests.faults.harness import answer, start_run, wait_for
from tests.pg import DedicatedServer

pytestmark = pytest.mark.postgres


def progress(pct: int) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": f"p{pct}",
            "role": "assistant",
            "content": [{"type": "text", "text": f"PROGRESS: {pct}%"}],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }


async def _arrivals(dsn: str, orch_id: str) -> dict[str, tuple[list[str], list[str]]]:
    try:
        conn = await connect(dsn)
    except Exception:
        return {}
    try:
        return {p.point: (p.arrived, p.missing) for p in await read_points(conn, orch_id)}
    finally:
        await conn.close()


def test_arrivals_made_while_the_database_is_away_are_recorded(
    tmp_path: Path, pg_dedicated_server: DedicatedServer
) -> None:
    dsn = pg_dedicated_server.dsn
    down, back = tmp_path / "db.down", tmp_path / "db.back"
    started = {n: tmp_path / f"{n}.started" for n in "abc"}
    crossed = {n: tmp_path / f"{n}.crossed" for n in "abc"}

    def crosses(name: str) -> list[dict[str, Any]]:
        return [
            {"marker": str(started[name])},
            {"wait_file": str(down)},
            {"lines": [progress(30)]},
            {"marker": str(crossed[name])},
            {"lines": answer(f"m-{name}", 5, 5)},
        ]

    run = start_run(
        tmp_path,
        {
            "a": crosses("a"),
            "b": crosses("b"),
            "c": [{"marker": str(started["c"])}, {"wait_file": str(back)}, *crosses("c")[2:]],
        },
        orchestration={"sync": {"mode": "milestone", "timeout_s": 120}},
        args=["--database-url", dsn, "--orchestration-id", "barrier-outage"],
    )
    try:
        wait_for(lambda: all(p.exists() for p in started.values()), 30, "every instance")
        pg_dedicated_server.stop()
        down.touch()
        wait_for(lambda: crossed["a"].exists() and crossed["b"].exists(), 60, "a and b past 30%")
        # Longer than the barrier's own retries: the arrivals are kept for later.
        wait_for(
            lambda: "barrier unavailable at 30%" in run.stdout + run.stderr, 60, "the kept line"
        )
        pg_dedicated_server.start()
        # The kept arrivals reach the database while the run still goes on.
        wait_for(
            lambda: (
                sorted(
                    asyncio.run(_arrivals(dsn, "barrier-outage")).get("milestone:30", ([], []))[0]
                )
                == ["a", "b"]
            ),
            30,
            "a's and b's arrivals at 30% to be recorded",
        )
        back.touch()
        code = run.wait(timeout=60)
    finally:
        run.wait(timeout=0.1) if run.proc.poll() is None else None
    assert code == 0, run.stderr + run.stdout
    points = asyncio.run(_arrivals(dsn, "barrier-outage"))
    arrived, missing = points["milestone:30"]
    assert sorted(arrived) == ["a", "b", "c"]
    assert missing == []
    sync = run.results()["sync"]
    point30 = next(p for p in sync["points"] if p["point"] == "milestone:30")
    assert sorted(point30["arrived"]) == ["a", "b", "c"] and point30["missing"] == []
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    assert "kept arrival(s)/end(s) recorded" in output
