"""One LISTEN connection of its own on one channel, reconnected in the background on demand.

A notification is only ever a hint that something changed: whoever listens also polls,
so a listener that is down (the database away, its connection cut) costs latency, never
correctness. ``on_lost`` is told when a live listener's connection ends (notifications
in the gap are lost: re-read what matters), ``on_back`` when a reconnect succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from coordinator.db.postgres import connect, database_errors
from coordinator.errors import DatabaseError
from runner import aio

log = structlog.get_logger("coordinator.db.listen")

Notified = Callable[[str], None]  # the payload


class Listener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Notified,
        *,
        what: str,
        on_lost: Callable[[], None] | None = None,
        on_back: Callable[[], None] | None = None,
        retry_pause_s: float = 0.0,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.what = what  # "listen for <what>", in errors and the log
        self._on_notify = on_notify
        self._on_lost = on_lost
        self._on_back = on_back
        self.retry_pause_s = retry_pause_s  # after a failed attempt: the next waits this long
        self._conn: asyncpg.Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> None:
        """One attempt, now; DatabaseError if it failed."""
        conn = await connect(self.dsn)
        try:
            with database_errors(f"listen for {self.what}"):
                await conn.add_listener(self.channel, self._notified)
            conn.add_termination_listener(self._lost)
        except BaseException:
            await conn.close()
            raise
        if self._closed:
            await conn.close()
            return
        self._conn = conn

    def ensure(self) -> None:
        """(Re)connect in the background if not listening (one attempt at a time)."""
        if self._closed or self.listening:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._reconnect(), name=f"listen:{self.what}")

    async def _reconnect(self) -> None:
        try:
            await self.connect()
        except DatabaseError as exc:
            log.info("not listening", what=self.what, error=str(exc))
            if self.retry_pause_s:
                await asyncio.sleep(self.retry_pause_s)
            return
        if self._on_back is not None and self.listening:
            self._on_back()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    def _lost(self, conn: Any) -> None:
        if conn is self._conn:
            self._conn = None
        if self._on_lost is not None and not self._closed:
            self._on_lost()

    async def close(self, timeout: float = 2.0) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, DatabaseError):
                await self._connecting
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing: a broken link is no news
                await aio.wait_for(conn.close(), timeout)
