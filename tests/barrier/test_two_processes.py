"""Two OS processes, one orchestration: each hosts some participants; they synchronise.

The parent hosts ``a`` and ``b``, a child process (this module run with ``python -m``)
hosts ``c`` and ``d``; lock-step over ``step:1..3``. Checked on the database's own clock:
no point is released before its last arrival, and nobody arrives at step k+1 before step
k was released. ``b`` leaves after step 2; step 3 is released without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from coordinator.barrier import PostgresBarrier, step_point

REPO = Path(__file__).resolve().parents[2]
EVERYONE = ["a", "b", "c", "d"]
STEPS = 3
POLL_S = 0.2


async def _open(
    dsn: str,
    orchestration_id: str,
    participants: Sequence[str] = EVERYONE,
    timeout_s: float = 20.0,
    lease_s: float = 30.0,
) -> PostgresBarrier:
    return await PostgresBarrier.open(
        dsn,
        orchestration_id,
        mode="lockstep",
        participants=participants,
        timeout_s=timeout_s,
        poll_interval_s=POLL_S,
        run_migrations=False,
        pool_size=2,
        lease_s=lease_s,
    )


async def _participant(barrier: PostgresBarrier, name: str, steps: int) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    for k in range(1, steps + 1):
        point = step_point(k)
        await barrier.arrive(name, point)
        outcome = await barrier.wait(name, point)
        seen.append(
            {"name": name, "point": point, "released": outcome.released, "pid": os.getpid()}
        )
    return seen


async def child_main(dsn: str, orchestration_id: str, names: Sequence[str]) -> None:
    barrier = await _open(dsn, orchestration_id)
    try:
        await barrier.register(names)
        results = await asyncio.gather(*(_participant(barrier, n, STEPS) for n in names))
        for name in names:
            await barrier.complete(name)
    finally:
        await barrier.close()
    for seen in results:
        for line in seen:
            print(json.dumps(line), flush=True)


async def _until_arrived(conn: asyncpg.Connection, orch: str, point: str, names: set[str]) -> None:
    deadline = time.monotonic() + 30.0
    while True:
        rows = await conn.fetch(
            "SELECT name FROM barrier_arrivals WHERE orchestration_id = $1 AND point = $2",
            orch,
            point,
        )
        if {r["name"] for r in rows} >= names:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{names} never arrived at {point}")
        await asyncio.sleep(0.02)


async def test_two_processes_share_one_barrier(pg_dsn: str, orchestration_id: str) -> None:
    barrier = await _open(pg_dsn, orchestration_id)
    await barrier.register(["a", "b"])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.barrier.test_two_processes",
        pg_dsn,
        orchestration_id,
        "c",
        "d",
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        # The child's participants reach step 1 first and must be held there by us.
        await _until_arrived(conn, orchestration_id, "step:1", {"c", "d"})
        assert not any(p.released for p in await barrier.points())
        a_task = asyncio.create_task(_participant(barrier, "a", STEPS))
        b_steps = await _participant(barrier, "b", 2)
        await barrier.leave("b", "failed")
        a_steps = await asyncio.wait_for(a_task, 30.0)
        await barrier.complete("a")
        out, err = await asyncio.wait_for(child.communicate(), 30.0)
        assert child.returncode == 0, err.decode()
        child_steps = [json.loads(line) for line in out.decode().splitlines()]

        everything = a_steps + b_steps + child_steps
        assert len(everything) == 3 + 2 + 2 * 3
        assert all(s["released"] for s in everything)
        assert {s["pid"] for s in everything} == {os.getpid(), child.pid}

        arrivals = await conn.fetch(
            "SELECT point, name, arrived_at FROM barrier_arrivals WHERE orchestration_id = $1",
            orchestration_id,
        )
        releases = {
            r["point"]: r
            for r in await conn.fetch(
                "SELECT point, released_at, timed_out FROM barrier_releases "
                "WHERE orchestration_id = $1",
                orchestration_id,
            )
        }
    finally:
        await conn.close()
        if child.returncode is None:
            child.kill()
            await child.wait()
        await barrier.close()

    assert sorted(releases) == [step_point(k) for k in range(1, STEPS + 1)]
    assert not any(r["timed_out"] for r in releases.values())
    for k in range(1, STEPS + 1):
        at_k = [r for r in arrivals if r["point"] == step_point(k)]
        expected = {"a", "c", "d"} | ({"b"} if k <= 2 else set())
        assert {r["name"] for r in at_k} == expected
        assert releases[step_point(k)]["released_at"] >= max(r["arrived_at"] for r in at_k)
        if k > 1:
            assert min(r["arrived_at"] for r in at_k) >= releases[step_point(k - 1)]["released_at"]


LEASE_S = 1.0


async def _open_leased(dsn: str, orchestration_id: str) -> PostgresBarrier:
    return await _open(dsn, orchestration_id, ["a", "c"], 30.0, lease_s=LEASE_S)


async def leased_child_main(dsn: str, orchestration_id: str) -> None:
    """Hosts ``c``: arrives at step 1, says so, then lives (heartbeating) until killed."""
    barrier = await _open_leased(dsn, orchestration_id)
    await barrier.register(["c"])
    await barrier.arrive("c", step_point(1))
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _seen_at(conn: asyncpg.Connection, orch: str, name: str) -> tuple[str, object]:
    row = await conn.fetchrow(
        "SELECT state, seen_at FROM barrier_participants WHERE orchestration_id = $1 AND name = $2",
        orch,
        name,
    )
    assert row is not None
    return row["state"], row["seen_at"]


async def test_a_killed_process_leaves_after_its_lease_not_the_timeout(
    pg_dsn: str, orchestration_id: str
) -> None:
    barrier = await _open_leased(pg_dsn, orchestration_id)
    await barrier.register(["a"])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.barrier.test_two_processes",
        "--leased",
        pg_dsn,
        orchestration_id,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 30.0)).strip() == b"ready"
        # Alive: its heartbeats move seen_at on, and it is never expired meanwhile, even
        # after more than two leases (each decision below runs the expiry).
        await barrier.arrive("a", step_point(1))
        assert (await barrier.wait("a", step_point(1))).released
        state, first = await _seen_at(conn, orchestration_id, "c")
        beats = 0
        deadline = time.monotonic() + 30.0
        while beats < 7:  # seven heartbeats (one per lease/3): over two leases have passed
            assert time.monotonic() < deadline, "no heartbeats from the child"
            await barrier.arrive("a", "probe")  # a decision: expiry runs, c stays active
            state, seen = await _seen_at(conn, orchestration_id, "c")
            assert state == "active"
            if seen != first:
                beats, first = beats + 1, seen
            await asyncio.sleep(POLL_S)
        # Killed without a word: after one lease, the next decision lets "a" go on.
        child.kill()
        await child.wait()
        started = time.monotonic()
        await barrier.arrive("a", step_point(2))
        outcome = await barrier.wait("a", step_point(2))
        waited = time.monotonic() - started
        left = await conn.fetchrow(
            "SELECT state, reason FROM barrier_participants"
            " WHERE orchestration_id = $1 AND name = 'c'",
            orchestration_id,
        )
    finally:
        await conn.close()
        if child.returncode is None:
            child.kill()
            await child.wait()
        await barrier.close()
    assert outcome.released and not outcome.timed_out
    assert waited < 10.0  # the lease (1 s) plus a poll or two, never the 30 s timeout
    assert left is not None and left["state"] == "left"
    assert "no heartbeat" in left["reason"]


if __name__ == "__main__":
    if sys.argv[1] == "--leased":
        asyncio.run(leased_child_main(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(child_main(sys.argv[1], sys.argv[2], sys.argv[3:]))
