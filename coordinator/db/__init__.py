"""The Postgres layer: schema migrations, the store, the batched writer, the embedded server.

Typical use by the run engine::

    resolved = await asyncio.to_thread(resolve_dsn, args.database_url)
    store = await open_store(resolved.dsn)          # pool + migrations
    async with BatchedWriter(store) as writer:
        await store.create_orchestration(row)        # before submitting its rows
        writer.submit_instance(...)                  # hot path: enqueue only
        writer.submit_checkpoint(...)
    await store.finish_orchestration(...)
    await store.close()
"""

from __future__ import annotations

from coordinator.db.dsn import ResolvedDsn, mask_dsn, resolve_dsn
from coordinator.db.embedded import ensure_embedded_server, stop_embedded_server
from coordinator.db.memory import MemoryStore
from coordinator.db.migrations import MigrationError, migrate, migrate_dsn
from coordinator.db.postgres import PostgresStore, connect, create_pool
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow, ProgressRow
from coordinator.db.store import (
    DatabaseUnavailableError,
    OrchestrationExistsError,
    OrchestrationNotFoundError,
    Store,
)
from coordinator.db.writer import BatchedWriter, WriterStats

__all__ = [
    "BatchedWriter",
    "CheckpointRow",
    "DatabaseUnavailableError",
    "InstanceRow",
    "MemoryStore",
    "MigrationError",
    "OrchestrationExistsError",
    "OrchestrationNotFoundError",
    "OrchestrationRow",
    "PostgresStore",
    "ProgressRow",
    "ResolvedDsn",
    "Store",
    "WriterStats",
    "connect",
    "create_pool",
    "ensure_embedded_server",
    "mask_dsn",
    "migrate",
    "migrate_dsn",
    "open_store",
    "resolve_dsn",
    "stop_embedded_server",
]


async def open_store(
    dsn: str, *, run_migrations: bool = True, min_size: int = 1, max_size: int = 4
) -> PostgresStore:
    """A PostgresStore on a pool of its own (closed by ``store.close()``), migrated first."""
    pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
    try:
        if run_migrations:
            async with pool.acquire() as conn:
                await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return PostgresStore(pool, owns_pool=True)
