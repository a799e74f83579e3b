from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from coordinator.barrier import Barrier, MemoryBarrier, PostgresBarrier
from tests.pg import *  # noqa: F403

# Short polls keep the fallback paths fast; generous timeouts are never reached unless a
# test wants a timeout.
POLL_S = 0.2
LONG_TIMEOUT_S = 20.0

_ids = itertools.count()
BarrierFactory = Callable[..., Awaitable[Barrier]]


@pytest.fixture
def orchestration_id() -> str:
    return f"orch-{next(_ids)}"


@pytest.fixture
async def pg_barriers(pg_dsn: str, orchestration_id: str) -> AsyncIterator[BarrierFactory]:
    """Open PostgresBarriers on this test's database (each one is like another process:
    its own pool and listener); all closed at the end."""
    opened: list[PostgresBarrier] = []

    async def open_one(
        participants: Sequence[str],
        timeout_s: float = LONG_TIMEOUT_S,
        *,
        mode: str = "milestone",
        orchestration: str | None = None,
        **kwargs: Any,
    ) -> PostgresBarrier:
        kwargs.setdefault("poll_interval_s", POLL_S)
        barrier = await PostgresBarrier.open(
            pg_dsn,
            orchestration or orchestration_id,
            mode=mode,
            participants=participants,
            timeout_s=timeout_s,
            run_migrations=False,
            pool_size=2,
            **kwargs,
        )
        opened.append(barrier)
        return barrier

    try:
        yield open_one
    finally:
        for barrier in opened:
            await barrier.close()


@pytest.fixture(params=["memory", "postgres"])
def any_barrier(request: pytest.FixtureRequest, orchestration_id: str) -> BarrierFactory:
    """One barrier hosting every participant; the behaviour suite runs once per backend."""
    if request.param == "postgres":
        factory: BarrierFactory = request.getfixturevalue("pg_barriers")
        return factory

    async def open_one(
        participants: Sequence[str], timeout_s: float = LONG_TIMEOUT_S, **_: Any
    ) -> MemoryBarrier:
        return MemoryBarrier(orchestration_id, participants, timeout_s)

    return open_one
