from __future__ import annotations

import asyncpg
import pytest

from coordinator.db.memory import MemoryStore
from coordinator.db.postgres import PostgresStore
from coordinator.db.store import Store
from tests.pg import *  # noqa: F403


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Store:
    """The contract suite runs once per implementation (a fresh database for Postgres)."""
    if request.param == "memory":
        return MemoryStore()
    pool: asyncpg.Pool = request.getfixturevalue("pg_pool")
    return PostgresStore(pool)
