"""Barrier behaviour on real Postgres (and the same suite on the in-memory barrier).

No sleeps as synchronisation: tests wait for conditions (with a deadline) and assert that
a waiter cannot have returned because the database holds no release yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from coordinator.barrier import (
    Barrier,
    BarrierError,
    PostgresBarrier,
    WaitOutcome,
    milestone_points,
    open_barrier,
    render_sync_line,
)
from coordinator.barrier.memory import FreeBarrier, MemoryBarrier
from tests.barrier.conftest import POLL_S, BarrierFactory

P30 = "milestone:30"


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for ``condition`` to hold, checking often; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def arrived(barrier: Barrier, point: str, names: set[str]) -> bool:
    found = {p.point: p for p in await barrier.points()}
    return point in found and set(found[point].arrived) >= names


async def released(barrier: Barrier, point: str) -> bool:
    return any(p.point == point and p.released for p in await barrier.points())


async def arrive_and_wait(barrier: Barrier, name: str, point: str) -> tuple[WaitOutcome, float]:
    await barrier.arrive(name, point)
    outcome = await barrier.wait(name, point)
    return outcome, time.monotonic()


# --------------------------------------------------------------- both implementations


async def test_all_released_together_only_after_the_last_arrives(
    any_barrier: BarrierFactory,
) -> None:
    barrier = await any_barrier(["a", "b", "c"])
    first = asyncio.create_task(arrive_and_wait(barrier, "a", P30))
    await until(lambda: arrived(barrier, P30, {"a"}))
    second = asyncio.create_task(arrive_and_wait(barrier, "b", P30))
    await until(lambda: arrived(barrier, P30, {"a", "b"}))
    assert not await released(barrier, P30)
    assert not first.done() and not second.done()

    last_arrival = time.monotonic()
    third = await arrive_and_wait(barrier, "c", P30)
    results = [await first, await second, third]
    for outcome, resumed_at in results:
        assert outcome.released and not outcome.timed_out and outcome.missing == []
        assert resumed_at >= last_arrival
    (status,) = await barrier.points()
    assert status.released and not status.timed_out
    assert sorted(status.arrived) == ["a", "b", "c"]
    assert status.released_at is not None and status.released_at >= status.first_arrival_at


async def test_timeout_releases_waiters_and_records_who_was_missing(
    any_barrier: BarrierFactory,
) -> None:
    barrier = await any_barrier(["a", "b", "c"], timeout_s=0.5)
    started = time.monotonic()
    (out_a, _), (out_b, _) = await asyncio.gather(
        arrive_and_wait(barrier, "a", P30), arrive_and_wait(barrier, "b", P30)
    )
    elapsed = time.monotonic() - started
    for outcome in (out_a, out_b):
        assert outcome.timed_out and not outcome.released
        assert outcome.missing == ["c"]
        assert outcome.note is None  # decided and recorded, not the local safety net
    assert 0.4 <= elapsed < 0.5 + 1.5
    (status,) = await barrier.points()
    assert status.timed_out and status.missing == ["c"]
    # A latecomer passes the released point at once and learns it timed out.
    late, _ = await arrive_and_wait(barrier, "c", P30)
    assert late.timed_out and late.waited_s < 0.5


async def test_a_participant_that_leaves_is_not_waited_for(any_barrier: BarrierFactory) -> None:
    barrier = await any_barrier(["a", "b", "c"])
    waiters = [asyncio.create_task(arrive_and_wait(barrier, n, P30)) for n in ("a", "b")]
    await until(lambda: arrived(barrier, P30, {"a", "b"}))
    assert not await released(barrier, P30)
    await barrier.leave("c", "failed: exited with code 1")
    for task in waiters:
        outcome, _ = await task
        assert outcome.released and outcome.missing == []


async def test_a_completed_participant_has_passed_every_point(any_barrier: BarrierFactory) -> None:
    barrier = await any_barrier(["a", "b"])
    await barrier.complete("b")
    for point in milestone_points([30, 50]):
        outcome, _ = await arrive_and_wait(barrier, "a", point)
        assert outcome.released


async def test_rearrival_and_reregistration_are_harmless(any_barrier: BarrierFactory) -> None:
    barrier = await any_barrier(["a", "b"])
    await barrier.register(["a", "b"])
    await barrier.register(["a", "b"])
    await barrier.arrive("a", P30)
    await barrier.arrive("a", P30)  # e.g. after a restart
    (status,) = await barrier.points()
    assert status.arrived == ["a"] and not status.released
    await barrier.arrive("b", P30)
    await barrier.arrive("b", P30)
    outcome, _ = await arrive_and_wait(barrier, "a", P30)
    assert outcome.released
    (status,) = await barrier.points()
    assert sorted(status.arrived) == ["a", "b"]


async def test_leaving_twice_keeps_the_first_end(any_barrier: BarrierFactory) -> None:
    barrier = await any_barrier(["a", "b"])
    await barrier.leave("b", "blocked")
    await barrier.complete("b")
    await barrier.leave("b", "again")
    outcome, _ = await arrive_and_wait(barrier, "a", P30)
    assert outcome.released


async def test_sync_line_from_a_live_barrier(any_barrier: BarrierFactory) -> None:
    barrier = await any_barrier(["a", "b"])
    await barrier.arrive("a", "milestone:30")
    await barrier.arrive("b", "milestone:30")
    await barrier.arrive("a", "milestone:50")
    line = render_sync_line(await barrier.points(), milestone_points([30, 50, 70]))
    assert line == "Sync points: ✓ 30% ⏳ 50% (1/2) · 70%"


# --------------------------------------------------------------- Postgres only


async def test_rows_are_the_truth(pg_barriers: BarrierFactory, pg_dsn: str) -> None:
    barrier = await pg_barriers(["a", "b"])
    await barrier.register(["a", "b"])
    await barrier.arrive("a", P30)
    await barrier.arrive("b", P30)
    conn = await asyncpg.connect(pg_dsn)
    try:
        arrivals = await conn.fetch("SELECT name FROM barrier_arrivals ORDER BY name")
        releases = await conn.fetch("SELECT point, timed_out, missing FROM barrier_releases")
        states = await conn.fetch("SELECT name, state FROM barrier_participants ORDER BY name")
    finally:
        await conn.close()
    assert [r["name"] for r in arrivals] == ["a", "b"]
    assert [tuple(r) for r in releases] == [(P30, False, [])]
    assert [tuple(r) for r in states] == [("a", "active"), ("b", "active")]


async def test_two_barrier_objects_synchronise_through_notify(pg_barriers: BarrierFactory) -> None:
    here = await pg_barriers(["a", "b"], poll_interval_s=30.0)  # the poll cannot help here
    there = await pg_barriers(["a", "b"], poll_interval_s=30.0)
    waiter = asyncio.create_task(arrive_and_wait(here, "a", P30))
    await until(lambda: arrived(there, P30, {"a"}))
    await there.arrive("b", P30)
    outcome, _ = await asyncio.wait_for(waiter, 5.0)
    assert outcome.released and outcome.waited_s < 5.0


async def test_release_without_notifications_comes_from_the_poll(
    pg_barriers: BarrierFactory,
) -> None:
    deaf = await pg_barriers(["a", "b"], listen=False)
    other = await pg_barriers(["a", "b"])
    waiter = asyncio.create_task(arrive_and_wait(deaf, "a", P30))
    await until(lambda: arrived(other, P30, {"a"}))
    await other.arrive("b", P30)
    outcome, _ = await asyncio.wait_for(waiter, 5.0)
    assert outcome.released


async def test_waiter_that_connects_after_the_release_sees_it(
    pg_barriers: BarrierFactory,
) -> None:
    early = await pg_barriers(["a", "b"])
    await early.arrive("a", P30)
    await early.arrive("b", P30)
    latecomer = await pg_barriers(["a", "b"])  # a process that missed the NOTIFY entirely
    outcome = await latecomer.wait("a", P30)
    assert outcome.released and outcome.waited_s < 1.0


async def test_a_killed_listener_only_delays_and_is_reconnected(
    pg_barriers: BarrierFactory, pg_dsn: str
) -> None:
    barrier = await pg_barriers(["a", "b"])
    other = await pg_barriers(["a", "b"])
    assert isinstance(barrier, PostgresBarrier)
    listener = barrier._listener._conn
    assert listener is not None
    waiter = asyncio.create_task(arrive_and_wait(barrier, "a", P30))
    await until(lambda: arrived(other, P30, {"a"}))
    admin = await asyncpg.connect(pg_dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", listener.get_server_pid())
    finally:
        await admin.close()
    await other.arrive("b", P30)
    outcome, _ = await asyncio.wait_for(waiter, 5.0)
    assert outcome.released

    async def reconnected() -> bool:
        conn = barrier._listener._conn
        return conn is not None and conn is not listener and not conn.is_closed()

    # The next wait re-establishes LISTEN (watchers reconnect it in the background).
    waiter = asyncio.create_task(arrive_and_wait(barrier, "a", "milestone:50"))
    await until(reconnected)
    await other.arrive("b", "milestone:50")
    outcome, _ = await asyncio.wait_for(waiter, 5.0)
    assert outcome.released


async def test_timeout_is_decided_by_any_waiting_process(pg_barriers: BarrierFactory) -> None:
    """The timeout is recorded once even when two processes both see it due."""
    one = await pg_barriers(["a", "b", "c"], timeout_s=0.4)
    two = await pg_barriers(["a", "b", "c"], timeout_s=0.4)
    (o1, _), (o2, _) = await asyncio.gather(
        arrive_and_wait(one, "a", P30), arrive_and_wait(two, "b", P30)
    )
    assert o1.timed_out and o2.timed_out and o1.missing == o2.missing == ["c"]
    statuses = await one.points()
    assert [(s.point, s.timed_out, s.missing) for s in statuses] == [(P30, True, ["c"])]


async def test_many_concurrent_arrivals_release_exactly_once(
    pg_barriers: BarrierFactory, pg_dsn: str
) -> None:
    names = [f"i{n:02d}" for n in range(24)]
    hosts = [await pg_barriers(names) for _ in range(3)]
    for index, host in enumerate(hosts):
        await host.register(names[index::3])
    outcomes = await asyncio.gather(
        *(arrive_and_wait(hosts[i % 3], name, P30) for i, name in enumerate(names))
    )
    assert all(o.released for o, _ in outcomes)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM barrier_releases") == 1
    finally:
        await conn.close()


async def test_the_first_declaration_wins_and_a_mode_conflict_is_refused(
    pg_barriers: BarrierFactory,
) -> None:
    first = await pg_barriers(["a", "b"], timeout_s=5.0)
    second = await pg_barriers(["a", "b"], timeout_s=99.0)
    assert first.timeout_s == second.timeout_s == 5.0
    with pytest.raises(BarrierError, match="declared with sync mode 'milestone'"):
        await pg_barriers(["a", "b"], mode="lockstep")


async def test_a_participant_only_another_process_declared_is_waited_for(
    pg_barriers: BarrierFactory,
) -> None:
    """A process hosting only "a" still waits for "b", whom it never registers."""
    host_a = await pg_barriers(["a", "b"], timeout_s=0.3)
    await host_a.register(["a"])
    outcome, _ = await arrive_and_wait(host_a, "a", P30)
    assert outcome.timed_out and outcome.missing == ["b"]


async def test_open_barrier_picks_the_implementation(pg_dsn: str) -> None:
    assert isinstance(await open_barrier("free", "o", None, participants=["a"]), FreeBarrier)
    memory = await open_barrier("lockstep", "o", None, participants=["a"])
    assert isinstance(memory, MemoryBarrier)
    pg = await open_barrier("lockstep", "o", pg_dsn, participants=["a"], poll_interval_s=POLL_S)
    try:
        assert isinstance(pg, PostgresBarrier)
        await pg.arrive("a", "step:1")
        assert (await pg.wait("a", "step:1")).released
    finally:
        await pg.close()
    with pytest.raises(BarrierError):
        await open_barrier("sometimes", "o", None, participants=[])


async def test_free_barrier_never_waits() -> None:
    barrier = FreeBarrier()
    await barrier.arrive("a", P30)
    outcome = await barrier.wait("a", P30)
    assert outcome.released and outcome.waited_s == 0.0
    assert await barrier.points() == []


async def test_close_ends_pending_waits(pg_barriers: BarrierFactory) -> None:
    barrier = await pg_barriers(["a", "b"])
    waiter = asyncio.create_task(arrive_and_wait(barrier, "a", P30))
    await until(lambda: arrived(barrier, P30, {"a"}))
    await barrier.close()
    outcome, _ = await asyncio.wait_for(waiter, 5.0)
    assert not outcome.released and not outcome.timed_out and outcome.note == "barrier closed"


async def test_a_claimed_participant_outlives_its_holder_and_its_new_holder_rejoins(
    pg_barriers: BarrierFactory, pg_dsn: str
) -> None:
    """A participant held by a claim (a fleet runner's): its holder's process gone, the lease
    does not excuse it (the next point waits for it, here until the timeout); its new
    holder rejoins it with the points it had passed; the old holder, back, neither arrives
    nor ends it any more; a completed one is not revived."""
    old = await pg_barriers(["x", "y"], 1.5, host="old", lease_s=0.3)
    other = await pg_barriers(["x", "y"], host="other")
    assert await old.rejoin("x", [])
    await other.register(["y"])
    await old.arrive("x", P30)
    outcome, _ = await arrive_and_wait(other, "y", P30)
    assert outcome.released
    await old.close()  # its process is gone: no heartbeat any more
    outcome, _ = await arrive_and_wait(other, "y", "milestone:50")
    assert outcome.timed_out and outcome.missing == ["x"]  # five leases later: still expected
    new = await pg_barriers(["x", "y"], host="new")
    assert await new.rejoin("x", [P30, "milestone:50"])
    stale = await pg_barriers(["x", "y"], host="old")  # the old holder, back
    await stale.arrive("x", "milestone:70")
    await stale.leave("x", "its copy was stopped")
    assert not await arrived(other, "milestone:70", {"x"})
    waiter = asyncio.create_task(arrive_and_wait(other, "y", "milestone:70"))
    await until(lambda: arrived(other, "milestone:70", {"y"}))
    assert not await released(other, "milestone:70")  # x is live: it is waited for
    await new.arrive("x", "milestone:70")
    outcome, _ = await waiter
    assert outcome.released and not outcome.timed_out
    await new.complete("x")
    assert not await stale.rejoin("x", [])  # completed stays completed
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT state, host, rejoins FROM barrier_participants WHERE name = 'x'"
        )
    finally:
        await conn.close()
    assert tuple(row) == ("completed", "new", True)


async def test_memory_barrier_rejoin_makes_a_left_participant_live_again() -> None:
    barrier = MemoryBarrier("o", ["a", "b"], 5.0)
    await barrier.leave("b", "its process stopped")
    assert await barrier.rejoin("b", [P30])
    waiter = asyncio.create_task(arrive_and_wait(barrier, "a", "milestone:50"))
    await until(lambda: arrived(barrier, "milestone:50", {"a"}))
    assert not await released(barrier, "milestone:50")
    await barrier.arrive("b", "milestone:50")
    outcome, _ = await waiter
    assert outcome.released
    await barrier.complete("b")
    assert not await barrier.rejoin("b", [])
