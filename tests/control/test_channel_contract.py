"""One contract, two channels: every test runs against MemoryChannel and PostgresChannel
(a fresh migrated database per test, with the orchestrations the test names)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from coordinator.control.channel import ControlChannel, MemoryChannel, PostgresChannel
from coordinator.control.commands import ControlError, Verb
from coordinator.db.postgres import PostgresStore, create_pool
from coordinator.db.rows import OrchestrationRow

ORCHS = ("o1", "o2")
Maker = Callable[[], Awaitable[ControlChannel]]


@pytest.fixture
async def closers() -> AsyncIterator[list[Callable[[], Awaitable[None]]]]:
    """What the test opened, closed after it in reverse order (on the test's loop)."""
    made: list[Callable[[], Awaitable[None]]] = []
    yield made
    for close in reversed(made):
        await close()


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def channels(request: pytest.FixtureRequest) -> Maker:
    """Makes channels that share one truth: a sender's and a coordinator's."""
    if request.param == "memory":
        shared = MemoryChannel(ORCHS)

        async def make_memory() -> ControlChannel:
            return shared

        return make_memory
    dsn: str = request.getfixturevalue("pg_dsn")
    # After the database: closed before it is dropped.
    closers: list[Callable[[], Awaitable[None]]] = request.getfixturevalue("closers")
    pools: list[asyncpg.Pool] = []
    count = [0]

    async def make_postgres() -> ControlChannel:
        if not pools:
            pool = await create_pool(dsn)
            pools.append(pool)
            closers.append(pool.close)
            store = PostgresStore(pool)
            for orch in ORCHS:
                await store.create_orchestration(OrchestrationRow(orch, "running", "h", "free"))
        count[0] += 1  # one of each kind: a listener's own connection, a pool's
        channel = PostgresChannel.on_dsn(dsn) if count[0] % 2 else PostgresChannel.on_pool(pools[0])
        closers.append(channel.close)
        return channel

    return make_postgres


async def test_send_then_open_oldest_first(channels: Maker) -> None:
    sender, coord = await channels(), await channels()
    first = await sender.send("o1", Verb.PAUSE, ["a"], "host:1")
    second = await sender.send("o1", Verb.STOP, [], "host:1")
    await sender.send("o2", Verb.UNPAUSE, ["b"], "host:2")
    assert first.id < second.id
    assert first.requested_at is not None and first.acked_at is None
    opened = await coord.open_commands("o1")
    assert [(c.id, c.verb, c.instances) for c in opened] == [
        (first.id, Verb.PAUSE, ("a",)),
        (second.id, Verb.STOP, ()),
    ]
    assert opened[0].requested_by == "host:1"


async def test_take_apply_ack(channels: Maker) -> None:
    sender, coord = await channels(), await channels()
    sent = await sender.send("o1", Verb.PAUSE, ["a", "b"], "host:1")
    assert not await coord.ack(sent.id, {"a": "paused"}, None)  # not taken yet
    assert await coord.take(sent.id)
    assert not await coord.take(sent.id)  # taken once
    assert not await sender.withdraw(sent.id)  # too late to withdraw
    assert await coord.ack(sent.id, {"a": "paused", "b": "already completed"}, None)
    assert not await coord.ack(sent.id, {}, "twice")
    row = await sender.get(sent.id)
    assert row is not None and row.acked_at is not None and row.taken_at is not None
    assert row.outcome == {"a": "paused", "b": "already completed"} and row.error is None
    assert await coord.open_commands("o1") == []


async def test_ack_with_an_error(channels: Maker) -> None:
    sender, coord = await channels(), await channels()
    sent = await sender.send("o1", Verb.STOP, ["zed"], "host:1")
    assert await coord.take(sent.id)
    assert await coord.ack(sent.id, {}, "no instance named 'zed'")
    row = await sender.get(sent.id)
    assert row is not None and row.error == "no instance named 'zed'" and row.outcome == {}


async def test_withdrawn_is_never_taken(channels: Maker) -> None:
    sender, coord = await channels(), await channels()
    sent = await sender.send("o1", Verb.STOP, [], "host:1")
    assert await sender.withdraw(sent.id)
    assert not await sender.withdraw(sent.id)
    assert not await coord.take(sent.id)
    assert await coord.open_commands("o1") == []
    row = await sender.get(sent.id)
    assert row is not None and row.withdrawn_at is not None and row.taken_at is None


async def test_unknown_orchestration_and_command(channels: Maker) -> None:
    sender = await channels()
    with pytest.raises(ControlError, match="no orchestration 'nope'"):
        await sender.send("nope", Verb.STOP, [], "host:1")
    assert await sender.get(999_999) is None
    assert not await sender.take(999_999)
    assert not await sender.withdraw(999_999)


async def test_a_send_wakes_a_waiter_and_the_row_is_there_without_one(channels: Maker) -> None:
    sender, coord = await channels(), await channels()
    assert not await coord.wait("o1", 0.05)  # nothing yet: the timeout
    waiting = asyncio.ensure_future(coord.wait("o1", 30))
    await asyncio.sleep(0)  # let it start listening
    for _ in range(100):  # Postgres: LISTEN is set up on the waiter's first call
        if not isinstance(coord, PostgresChannel) or coord._listening:
            break
        await asyncio.sleep(0.02)
    began = time.monotonic()
    await sender.send("o2", Verb.PAUSE, [], "host:1")  # another orchestration: no wake
    await sender.send("o1", Verb.PAUSE, [], "host:1")
    assert await asyncio.wait_for(waiting, 10)
    assert time.monotonic() - began < 5  # woken, not timed out
    assert len(await coord.open_commands("o1")) == 1
