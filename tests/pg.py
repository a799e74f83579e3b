"""Postgres fixtures for any test folder.

In a ``tests/<folder>/conftest.py``::

    from tests.pg import *  # noqa: F403

Fixtures:

- ``pg_admin_dsn`` (session): a server for the whole run. ``$COORDINATOR_TEST_DATABASE_URL``
  if set (its user needs CREATEDB), else a throwaway embedded server in a temp dir,
  started through ``coordinator.db.embedded`` (so it works as root: Postgres runs as the
  ``pgserver`` OS user) and stopped and deleted at the end of the session.
- ``pg_template`` (session): the name of a database migrated once, cloned for each test.
- ``pg_dsn``: a FRESH migrated database for this test (``CREATE DATABASE ... TEMPLATE``),
  dropped afterwards.
- ``pg_empty_dsn``: a fresh database without any migration.
- ``pg_pool`` / ``pg_store``: an asyncpg pool / PostgresStore on ``pg_dsn``.
- ``pg_state_dir``: an empty state dir for an embedded server of the test's own.
- ``pg_dedicated_server``: a migrated server of this test's own that it may stop and start.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from coordinator.db.dsn import with_database
from coordinator.db.embedded import ensure_embedded_server, run_isolated, stop_embedded_server
from coordinator.db.migrations import migrate_dsn
from coordinator.db.postgres import (
    PostgresStore,
    connect,
    create_database,
    create_pool,
    drop_database,
)

__all__ = [
    "DedicatedServer",
    "pg_admin_dsn",
    "pg_dedicated_server",
    "pg_dsn",
    "pg_empty_dsn",
    "pg_pool",
    "pg_state_dir",
    "pg_store",
    "pg_template",
    "scratch_state_dir",
]

TEST_DATABASE_ENV = "COORDINATOR_TEST_DATABASE_URL"
_PREFIX = f"coordinator_test_{os.getpid()}"
_counter = itertools.count()


async def _create(admin_dsn: str, name: str, template: str | None) -> None:
    conn = await connect(admin_dsn)
    try:
        await create_database(conn, name, template=template)
    finally:
        await conn.close()


async def _drop(admin_dsn: str, name: str) -> None:
    conn = await connect(admin_dsn)
    try:
        await drop_database(conn, name)
    finally:
        await conn.close()


def _fresh_database(admin_dsn: str, template: str | None) -> Iterator[str]:
    name = f"{_PREFIX}_{next(_counter)}"
    run_isolated(_create(admin_dsn, name, template))
    try:
        yield with_database(admin_dsn, name)
    finally:
        run_isolated(_drop(admin_dsn, name))


@contextmanager
def scratch_state_dir() -> Iterator[Path]:
    """A state dir for a throwaway embedded server; any server in it is stopped at the end.

    Deliberately not under pytest's tmp_path: every pytest session start chmods
    /tmp/pytest-of-<user> back to 0700, which (when running as root) cuts the ``pgserver``
    OS user off from a data directory below it, and the server dies mid-test.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="coordinator-test-pg-"))
    # mkdtemp made it 0700; as root the pgserver user must reach it, or the data directory
    # would go to /var/lib/coordinator (see coordinator/db/embedded.py) and outlive the test.
    state_dir.chmod(0o755)
    try:
        yield state_dir
    finally:
        try:
            stop_embedded_server(state_dir)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def pg_state_dir() -> Iterator[Path]:
    """An empty state dir for ``ensure_embedded_server``; stopped and removed afterwards."""
    with scratch_state_dir() as state_dir:
        yield state_dir


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    external = os.environ.get(TEST_DATABASE_ENV)
    if external:
        yield external
        return
    with scratch_state_dir() as state_dir:
        yield with_database(ensure_embedded_server(state_dir), "postgres")


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> Iterator[str]:
    name = f"{_PREFIX}_template"
    run_isolated(_create(pg_admin_dsn, name, None))
    try:
        run_isolated(migrate_dsn(with_database(pg_admin_dsn, name)))
        yield name
    finally:
        run_isolated(_drop(pg_admin_dsn, name))


@pytest.fixture
def pg_dsn(pg_admin_dsn: str, pg_template: str) -> Iterator[str]:
    yield from _fresh_database(pg_admin_dsn, pg_template)


@pytest.fixture
def pg_empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    yield from _fresh_database(pg_admin_dsn, None)


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pg_store(pg_pool: asyncpg.Pool) -> PostgresStore:
    return PostgresStore(pg_pool)


@dataclass
class DedicatedServer:
    """An embedded server owned by one test, which may stop and restart it."""

    state_dir: Path
    dsn: str

    def stop(self) -> None:
        stop_embedded_server(self.state_dir)

    def start(self) -> None:
        assert ensure_embedded_server(self.state_dir) == self.dsn


@pytest.fixture
def pg_dedicated_server(pg_state_dir: Path) -> DedicatedServer:
    server = DedicatedServer(pg_state_dir, ensure_embedded_server(pg_state_dir))
    run_isolated(migrate_dsn(server.dsn))
    return server
