"""The control channel: commands are rows of ``control_commands`` (sql/005_control.sql);
NOTIFY on ``coordinator_control`` only wakes the coordinator up.

:class:`PostgresChannel` keeps ONE connection of its own (it LISTENs on it when asked to
wait), reconnects on the next call after it broke and re-LISTENs then; notifications sent
in the gap are lost, which only delays a command until the next poll. :class:`MemoryChannel`
is its in-memory twin for engine tests; one contract suite runs against both
(tests/control/test_channel_contract.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from coordinator.control.commands import ControlCommand, ControlError, Verb, command_from_row
from coordinator.db.postgres import connect, database_errors, is_transient, load_queries
from coordinator.errors import DatabaseError
from runner import aio

CHANNEL = "coordinator_control"
QUERIES_FILE = Path(__file__).with_name("queries.sql")
_FK_VIOLATION = "23503"


def _sql(name: str) -> str:
    return load_queries(QUERIES_FILE)[name]


class ControlChannel(Protocol):
    async def send(
        self, orchestration_id: str, verb: Verb, instances: Sequence[str], requested_by: str
    ) -> ControlCommand:
        """Queue a command (and wake its coordinator). ControlError: no such orchestration."""
        ...

    async def open_commands(self, orchestration_id: str) -> list[ControlCommand]:
        """Neither acknowledged nor withdrawn, oldest first."""
        ...

    async def take(self, command_id: int) -> bool:
        """Claim it before applying; False if it was withdrawn or taken already."""
        ...

    async def ack(self, command_id: int, outcome: Mapping[str, str], error: str | None) -> bool:
        """Acknowledge a taken command with its outcome per instance (or an error)."""
        ...

    async def withdraw(self, command_id: int) -> bool:
        """The sender gives up; False once a coordinator took it."""
        ...

    async def get(self, command_id: int) -> ControlCommand | None: ...

    async def wait(self, orchestration_id: str, timeout: float) -> bool:
        """Until a command for ``orchestration_id`` may have arrived (True) or ``timeout``
        (False). A hint only: read :meth:`open_commands` either way."""
        ...

    async def close(self) -> None: ...


class MemoryChannel:
    """The in-memory twin (one process): the same contract as :class:`PostgresChannel`."""

    def __init__(self, orchestrations: Collection[str]) -> None:
        self.orchestrations = set(orchestrations)
        self._rows: dict[int, ControlCommand] = {}
        self._ids = itertools.count(1)
        self._wake: dict[str, asyncio.Event] = {}

    async def send(
        self, orchestration_id: str, verb: Verb, instances: Sequence[str], requested_by: str
    ) -> ControlCommand:
        if orchestration_id not in self.orchestrations:
            raise ControlError(f"no orchestration {orchestration_id!r} in the database")
        row = ControlCommand(
            next(self._ids),
            orchestration_id,
            Verb(verb),
            tuple(instances),
            requested_by,
            requested_at=_now(),
        )
        self._rows[row.id] = row
        self._event(orchestration_id).set()
        return row

    async def open_commands(self, orchestration_id: str) -> list[ControlCommand]:
        return [
            r for r in self._rows.values() if r.orchestration_id == orchestration_id and r.is_open
        ]

    async def take(self, command_id: int) -> bool:
        row = self._rows.get(command_id)
        if row is None or row.taken_at is not None or row.withdrawn_at is not None:
            return False
        self._rows[command_id] = replace(row, taken_at=_now())
        return True

    async def ack(self, command_id: int, outcome: Mapping[str, str], error: str | None) -> bool:
        row = self._rows.get(command_id)
        if row is None or row.taken_at is None or row.acked_at is not None:
            return False
        self._rows[command_id] = replace(row, acked_at=_now(), outcome=dict(outcome), error=error)
        return True

    async def withdraw(self, command_id: int) -> bool:
        row = self._rows.get(command_id)
        if row is None or row.taken_at is not None or row.withdrawn_at is not None:
            return False
        self._rows[command_id] = replace(row, withdrawn_at=_now())
        return True

    async def get(self, command_id: int) -> ControlCommand | None:
        return self._rows.get(command_id)

    async def wait(self, orchestration_id: str, timeout: float) -> bool:
        event = self._event(orchestration_id)
        try:
            await aio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        event.clear()
        return True

    async def close(self) -> None:
        return None

    def _event(self, orchestration_id: str) -> asyncio.Event:
        return self._wake.setdefault(orchestration_id, asyncio.Event())


class PostgresChannel:
    """One connection of its own (:meth:`on_dsn`: the coordinator's listener) or of a pool
    (:meth:`on_pool`: a command line sending one command), made on first use and again
    after it broke."""

    def __init__(
        self,
        acquire: Callable[[], Awaitable[asyncpg.Connection]],
        release: Callable[[asyncpg.Connection], Awaitable[None]],
    ) -> None:
        self._acquire = acquire
        self._release = release
        self._conn: asyncpg.Connection | None = None
        self._listening = False
        self._wake: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def on_dsn(cls, dsn: str, *, connect_timeout: float = 5.0) -> PostgresChannel:
        async def close(conn: asyncpg.Connection) -> None:
            conn.terminate()  # at once, also with the server gone: nothing is pending on it

        return cls(lambda: connect(dsn, timeout=connect_timeout), close)

    @classmethod
    def on_pool(cls, pool: asyncpg.Pool, *, timeout: float = 10.0) -> PostgresChannel:
        async def acquire() -> asyncpg.Connection:
            with database_errors("acquire a connection"):
                conn: asyncpg.Connection = await pool.acquire(timeout=timeout)
            return conn

        async def release(conn: asyncpg.Connection) -> None:
            await pool.release(conn)

        return cls(acquire, release)

    async def send(
        self, orchestration_id: str, verb: Verb, instances: Sequence[str], requested_by: str
    ) -> ControlCommand:
        try:
            row = await self._fetchrow(
                "send command", "send", orchestration_id, str(verb), list(instances), requested_by
            )
        except DatabaseError as exc:
            if exc.fields.get("sqlstate") != _FK_VIOLATION:
                raise
            raise ControlError(f"no orchestration {orchestration_id!r} in the database") from None
        assert row is not None
        return command_from_row(row)

    async def open_commands(self, orchestration_id: str) -> list[ControlCommand]:
        async with self._connection("read control commands") as conn:
            rows = await conn.fetch(_sql("open_commands"), orchestration_id)
        return [command_from_row(r) for r in rows]

    async def take(self, command_id: int) -> bool:
        return await self._fetchrow("take control command", "take", command_id) is not None

    async def ack(self, command_id: int, outcome: Mapping[str, str], error: str | None) -> bool:
        row = await self._fetchrow(
            "acknowledge control command", "ack", command_id, dict(outcome), error
        )
        return row is not None

    async def withdraw(self, command_id: int) -> bool:
        return await self._fetchrow("withdraw control command", "withdraw", command_id) is not None

    async def get(self, command_id: int) -> ControlCommand | None:
        row = await self._fetchrow("read control command", "get", command_id)
        return command_from_row(row) if row is not None else None

    async def wait(self, orchestration_id: str, timeout: float) -> bool:
        event = self._wake.setdefault(orchestration_id, asyncio.Event())
        async with self._connection("listen for control commands") as conn:
            if not self._listening:
                await conn.add_listener(CHANNEL, self._notified)
                await conn.execute(_sql("listen"))
                self._listening = True
        try:
            await aio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        event.clear()
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._drop(conn)

    # ------------------------------------------------------------------ internals
    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        event = self._wake.get(payload)
        if event is not None:
            event.set()

    def _lost(self, conn: object) -> None:
        if conn is self._conn:
            self._conn = None
            self._listening = False

    async def _drop(self, conn: asyncpg.Connection) -> None:
        with contextlib.suppress(Exception):
            if self._listening:
                await conn.remove_listener(CHANNEL, self._notified)
        try:
            await aio.wait_for(self._release(conn), 3.0)
        except Exception:
            conn.terminate()

    async def _fetchrow(self, what: str, name: str, *args: Any) -> asyncpg.Record | None:
        async with self._connection(what) as conn:
            row: asyncpg.Record | None = await conn.fetchrow(_sql(name), *args)
            return row

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> Any:
        """The connection (made now if there is none); one that fails is dropped, so the
        next call reconnects (and LISTENs again)."""
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._listening = False
                self._conn = await self._acquire()
            conn = self._conn
            try:
                with database_errors(what):
                    yield conn
            except BaseException as exc:  # cancelled mid-statement too: never reuse it
                if conn.is_closed() or is_transient(exc) or not isinstance(exc, Exception):
                    self._lost(conn)
                    with contextlib.suppress(Exception):
                        conn.terminate()
                    with contextlib.suppress(Exception):
                        await aio.wait_for(self._release(conn), 1.0)
                raise


def _now() -> datetime:
    return datetime.now(UTC)
