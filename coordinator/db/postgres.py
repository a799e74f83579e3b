"""asyncpg adapter: connections, the pool, error translation and :class:`PostgresStore`.

Every statement comes from ``queries.sql`` by name and takes its values as ``$n``
parameters. ``connect()`` and ``create_pool()`` set up the same codecs (json/jsonb as
Python objects), so a dedicated LISTEN connection behaves like the pool's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson

from coordinator.db.dsn import mask_dsn
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow, ProgressRow
from coordinator.db.store import (
    DatabaseUnavailableError,
    OrchestrationExistsError,
    OrchestrationNotFoundError,
)
from coordinator.errors import DatabaseError
from coordinator.pool.entries import Kind, PoolEntry

QUERIES_FILE = Path(__file__).with_name("queries.sql")
POOL_QUERIES_FILE = Path(__file__).parent.parent / "pool" / "queries.sql"
CONNECT_TIMEOUT = 10.0
# SQLSTATE classes after which the same statement may succeed later: connection exception,
# operator intervention (shutdown, cannot connect now), insufficient resources,
# transaction rollback (serialization, deadlock), system error.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "57", "53", "40", "58"})
R = TypeVar("R")
_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load_queries(path: Path) -> Mapping[str, str]:
    """The named statements of a ``.sql`` file: each starts at a ``-- name: x`` line."""
    text = path.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    pieces = _NAME_LINE.split(text)
    for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
        if name in found:
            raise DatabaseError(f"{path}: query {name!r} is defined twice")
        found[name] = body.strip()
    return found


def queries() -> Mapping[str, str]:
    """The named statements of the store's ``queries.sql``."""
    return load_queries(QUERIES_FILE)


def query(name: str) -> str:
    return queries()[name]


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means "the database is unreachable right now", not "this is wrong"."""
    if isinstance(exc, DatabaseUnavailableError | OSError | TimeoutError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # asyncpg reports use of a connection that is already gone as a bare InterfaceError
    # ("cannot perform operation: connection is closed"). Its client-side DataError (also
    # a ValueError), raised for values it cannot encode, quotes the value: never matched.
    return (
        isinstance(exc, asyncpg.InterfaceError)
        and not isinstance(exc, ValueError)
        and "connection is closed" in str(exc)
    )


def translate_error(exc: BaseException, operation: str) -> DatabaseError:
    """The DatabaseError to raise for a driver or socket error met during ``operation``."""
    if isinstance(exc, DatabaseError):
        return exc
    detail = str(exc) or type(exc).__name__
    if is_transient(exc):
        return DatabaseUnavailableError(f"{operation}: database unavailable: {detail}")
    sqlstate = getattr(exc, "sqlstate", None)
    return DatabaseError(f"{operation}: {detail}", sqlstate=sqlstate)


@contextmanager
def database_errors(operation: str) -> Iterator[None]:
    """Turn driver and socket errors raised inside the block into DatabaseError."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise translate_error(exc, operation) from exc


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


async def connect(dsn: str, *, timeout: float = CONNECT_TIMEOUT) -> asyncpg.Connection:
    """One connection with the store's codecs, e.g. for LISTEN (not from the pool)."""
    with database_errors(f"connect to {mask_dsn(dsn)}"):
        conn = await asyncpg.connect(dsn, timeout=timeout)
        try:
            await _init_connection(conn)
        except BaseException:
            await conn.close()
            raise
        return conn


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = CONNECT_TIMEOUT
) -> asyncpg.Pool:
    """A pool for reads and writes; broken connections are replaced on the next acquire."""
    with database_errors(f"connect to {mask_dsn(dsn)}"):
        return await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, timeout=timeout, init=_init_connection
        )


def quote_ident(name: str) -> str:
    """``name`` as a Postgres identifier, for the DDL that cannot take parameters."""
    if not name or "\x00" in name:
        raise DatabaseError(f"invalid identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


async def create_database(
    conn: asyncpg.Connection, name: str, *, template: str | None = None, exist_ok: bool = False
) -> bool:
    """CREATE DATABASE ``name`` (from ``template``); False if it existed and ``exist_ok``."""
    statement = f"CREATE DATABASE {quote_ident(name)}"
    if template is not None:
        statement += f" TEMPLATE {quote_ident(template)}"
    with database_errors(f"create database {name!r}"):
        if exist_ok and await conn.fetchval(query("database_exists"), name):
            return False
        try:
            await conn.execute(statement)
        except asyncpg.DuplicateDatabaseError:
            if not exist_ok:
                raise
            return False
    return True


async def drop_database(conn: asyncpg.Connection, name: str) -> None:
    """DROP DATABASE IF EXISTS ``name``, ending its sessions first."""
    with database_errors(f"drop database {name!r}"):
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def _orchestration(record: asyncpg.Record) -> OrchestrationRow:
    return OrchestrationRow(**dict(record.items()))


def _instance(record: asyncpg.Record) -> InstanceRow:
    values = dict(record.items())
    session_id = values.pop("session_id")
    return InstanceRow(**values, session_id=None if session_id is None else str(session_id))


def _checkpoint(record: asyncpg.Record) -> CheckpointRow:
    return CheckpointRow(**dict(record.items()))


def _progress(record: asyncpg.Record) -> ProgressRow:
    return ProgressRow(**dict(record.items()))


def _instance_args(row: InstanceRow) -> tuple[Any, ...]:
    return (
        row.orchestration_id,
        row.name,
        row.session_id,
        row.status,
        row.pid,
        row.host,
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_creation_tokens,
        row.total_tokens,
        row.cost_usd,
        row.tool_calls,
        row.turns,
        row.progress_pct,
        row.exit_code,
        row.error,
        row.reason,
        row.started_at,
        row.ended_at,
        row.wait_s,
        row.attempts,
        row.carry,
        row.measures,
    )


def _checkpoint_args(row: CheckpointRow) -> tuple[Any, ...]:
    return (
        row.orchestration_id,
        row.scenario_id,
        row.milestone_name,
        row.progress_pct,
        row.timestamp_unix,
        row.state_snapshot,
        row.metrics,
    )


def _pool_args(entry: PoolEntry) -> tuple[Any, ...]:
    return (
        entry.orchestration_id,
        entry.instance,
        entry.seq,
        entry.kind.value,
        entry.action,
        entry.topic,
        entry.summary,
        _dumps(list(entry.affects)),
        _dumps(list(entry.blocks)),
        datetime.fromtimestamp(entry.at_unix, UTC),
    )


def _pool_entry(record: asyncpg.Record) -> PoolEntry:
    return PoolEntry(
        orchestration_id=record["orchestration_id"],
        instance=record["instance"],
        kind=Kind(record["kind"]),
        action=record["action"],
        summary=record["summary"],
        at_unix=record["at"].timestamp(),
        topic=record["topic"],
        affects=tuple(record["affects"]),
        blocks=tuple(record["blocks"]),
        seq=record["seq"],
    )


def _columns(rows: Sequence[R], to_args: Callable[[R], tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to parallel column arrays, the parameters of an ``unnest($1::t[], ...)`` insert."""
    return [list(column) for column in zip(*map(to_args, rows), strict=True)]


class PostgresStore:
    """The Store on an asyncpg pool. Closes the pool on ``close()`` only if it owns it."""

    def __init__(self, pool: asyncpg.Pool, *, owns_pool: bool = False) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def create_orchestration(self, row: OrchestrationRow) -> OrchestrationRow:
        with database_errors("create orchestration"):
            record = await self._pool.fetchrow(
                query("create_orchestration"),
                row.id,
                row.config,
                row.status,
                row.budgets,
                row.host,
                row.sync_mode,
                row.results,
                row.lease_s,
                row.launch,
            )
        if record is None:
            raise OrchestrationExistsError(
                f"orchestration {row.id!r} already exists", orchestration_id=row.id
            )
        return _orchestration(record)

    async def finish_orchestration(
        self, orchestration_id: str, status: str, results: dict[str, object] | None
    ) -> OrchestrationRow:
        with database_errors("finish orchestration"):
            record = await self._pool.fetchrow(
                query("finish_orchestration"), orchestration_id, status, results
            )
        if record is None:
            raise OrchestrationNotFoundError(
                f"no orchestration {orchestration_id!r}", orchestration_id=orchestration_id
            )
        return _orchestration(record)

    async def reopen_orchestration(
        self, orchestration_id: str, host: str, lease_s: float
    ) -> OrchestrationRow | None:
        with database_errors("reopen orchestration"):
            record = await self._pool.fetchrow(
                query("reopen_orchestration"), orchestration_id, host, lease_s
            )
        if record is None and await self.get_orchestration(orchestration_id) is None:
            raise OrchestrationNotFoundError(
                f"no orchestration {orchestration_id!r}", orchestration_id=orchestration_id
            )
        return None if record is None else _orchestration(record)

    async def heartbeat_orchestration(self, orchestration_id: str) -> None:
        with database_errors("heartbeat"):
            await self._pool.execute(query("heartbeat_orchestration"), orchestration_id)

    async def upsert_instances(self, rows: Sequence[InstanceRow]) -> None:
        if not rows:
            return
        # One INSERT ... ON CONFLICT DO UPDATE may touch a key only once: keep the last.
        newest = list({row.key: row for row in rows}.values())
        with database_errors("write instances"):
            await self._pool.execute(query("upsert_instances"), *_columns(newest, _instance_args))

    async def write_claimed(
        self,
        orchestration_id: str,
        epoch: int,
        instances: Sequence[InstanceRow],
        checkpoints: Sequence[CheckpointRow],
    ) -> list[str]:
        """The rows of one fleet claim (``epoch``): written, in one transaction, only for the
        instances whose row still carries that epoch; returns the names whose rows were
        dropped (another runner took them over meanwhile)."""
        names = sorted({r.name for r in instances} | {c.scenario_id for c in checkpoints})
        if not names:
            return []
        with database_errors("write claimed rows"):
            async with self._pool.acquire() as conn, conn.transaction():
                held = {
                    r["name"]
                    for r in await conn.fetch(
                        query("claimed_instances"), orchestration_id, names, epoch
                    )
                }
                rows = list({r.key: r for r in instances if r.name in held}.values())
                marks = [c for c in checkpoints if c.scenario_id in held]
                if rows:
                    await conn.execute(query("upsert_instances"), *_columns(rows, _instance_args))
                if marks:
                    await conn.execute(query("add_checkpoints"), *_columns(marks, _checkpoint_args))
        return [n for n in names if n not in held]

    async def add_checkpoints(self, rows: Sequence[CheckpointRow]) -> None:
        if not rows:
            return
        with database_errors("write checkpoints"):
            await self._pool.execute(query("add_checkpoints"), *_columns(rows, _checkpoint_args))

    async def get_orchestration(self, orchestration_id: str) -> OrchestrationRow | None:
        with database_errors("read orchestration"):
            record = await self._pool.fetchrow(query("get_orchestration"), orchestration_id)
        return None if record is None else _orchestration(record)

    async def list_orchestrations(self, limit: int = 20) -> list[OrchestrationRow]:
        with database_errors("list orchestrations"):
            records = await self._pool.fetch(query("list_orchestrations"), limit)
        return [_orchestration(r) for r in records]

    async def list_instances(self, orchestration_id: str) -> list[InstanceRow]:
        with database_errors("list instances"):
            records = await self._pool.fetch(query("list_instances"), orchestration_id)
        return [_instance(r) for r in records]

    async def list_checkpoints(
        self, orchestration_id: str, scenario_id: str | None = None
    ) -> list[CheckpointRow]:
        with database_errors("list checkpoints"):
            if scenario_id is None:
                records = await self._pool.fetch(query("list_checkpoints"), orchestration_id)
            else:
                records = await self._pool.fetch(
                    query("list_scenario_checkpoints"), orchestration_id, scenario_id
                )
        return [_checkpoint(r) for r in records]

    async def latest_progress(self, orchestration_id: str) -> list[ProgressRow]:
        with database_errors("read progress"):
            records = await self._pool.fetch(query("latest_progress"), orchestration_id)
        return [_progress(r) for r in records]

    async def latest_orchestration_id(self) -> str | None:
        with database_errors("read latest orchestration"):
            value: str | None = await self._pool.fetchval(query("latest_orchestration_id"))
        return value

    async def add_pool_entries(self, entries: Sequence[PoolEntry]) -> None:
        if not entries:
            return
        with database_errors("write pool entries"):
            await self._pool.execute(
                load_queries(POOL_QUERIES_FILE)["add_pool_entries"],
                *_columns(list(entries), _pool_args),
            )

    async def list_pool_entries(
        self, orchestration_id: str, *, since: datetime | None = None, instance: str | None = None
    ) -> list[PoolEntry]:
        with database_errors("list pool entries"):
            records = await self._pool.fetch(
                load_queries(POOL_QUERIES_FILE)["list_pool_entries"],
                orchestration_id,
                since,
                instance,
            )
        return [_pool_entry(r) for r in records]

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()
