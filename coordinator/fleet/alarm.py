"""Budget crossings pushed to every runner: the runner that first sees a shared budget
exceeded (in the sums it polled, or in its own instance's live count) NOTIFYs channel
``coordinator_budget``; every runner LISTENs on one connection of its own and blocks the
instances it holds at once, instead of at its own next poll (``budget_poll_s``) behind a
query that a loaded database answers slowly. The poll stays: a lost notification or a
dropped listener only costs the poll's latency. The listener reconnects on the next
:meth:`BudgetAlarm.ensure` after it broke."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from coordinator.db.postgres import connect, database_errors
from coordinator.errors import DatabaseError
from coordinator.fleet.budgets import parse_alarm
from runner import aio

CHANNEL = "coordinator_budget"
log = structlog.get_logger("coordinator.fleet.alarm")


class BudgetAlarm:
    """One LISTEN connection; ``heard(orchestration_id, budget_key, used)`` per
    notification (``used``: what the run had spent against it when it was seen)."""

    def __init__(self, dsn: str, heard: Callable[[str, str, float], None]) -> None:
        self.dsn = dsn
        self.heard = heard
        self._conn: asyncpg.Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def ensure(self) -> None:
        """(Re)connect in the background if not listening (one attempt at a time)."""
        if self._closed or self.listening:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect(), name="budget-alarm")

    async def _connect(self) -> None:
        try:
            conn = await connect(self.dsn)
        except DatabaseError as exc:
            log.info("budget alarm not listening", error=str(exc))
            return
        try:
            with database_errors("listen for budget crossings"):
                await conn.add_listener(CHANNEL, self._notified)
        except DatabaseError as exc:
            log.info("budget alarm not listening", error=str(exc))
            await conn.close()
            return
        if self._closed:
            await conn.close()
            return
        self._conn = conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        parsed = parse_alarm(payload)
        if parsed is not None:
            self.heard(*parsed)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, DatabaseError):
                await self._connecting
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing: a broken link is no news
                await aio.wait_for(conn.close(), 2.0)
