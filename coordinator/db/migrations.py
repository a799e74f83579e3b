"""Numbered SQL migrations from ``sql/``, applied in order and recorded in a table.

``sql/NNN_name.sql`` files are applied in version order, each in its own transaction,
and recorded in ``coordinator_migrations(version, name, checksum, applied_at)``. The
whole check-and-apply runs under a session advisory lock, so two coordinators starting
at once against one database apply each file exactly once. Refused, before anything is
applied: a database newer than the newest file, an applied file whose checksum changed,
an applied version whose file is gone, and a new file older than the applied ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from coordinator.db.postgres import connect, database_errors, query
from coordinator.errors import DatabaseError

SQL_DIR_ENV = "COORDINATOR_SQL_DIR"
_FILE_NAME = re.compile(r"^(\d+)_(\w+)\.sql$")


class MigrationError(DatabaseError):
    """The migrations on disk and the ones recorded in the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    checksum: str
    sql: str = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}.sql"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


def sql_dir() -> Path:
    """``$COORDINATOR_SQL_DIR``, else the repository's top-level ``sql/``."""
    override = os.environ.get(SQL_DIR_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "sql"


def checksum(text: str) -> str:
    """sha256 of the file with line endings normalised (a CRLF checkout is the same file)."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every ``NNN_name.sql`` in ``directory``, in version order."""
    directory = sql_dir() if directory is None else directory
    if not directory.is_dir():
        raise MigrationError(f"migration directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version < 1:
            raise MigrationError(f"{path}: versions start at 1")
        if version in found:
            raise MigrationError(
                f"{path}: version {version} is also used by {found[version].label}"
            )
        text = path.read_text(encoding="utf-8")
        found[version] = Migration(version, match.group(2), checksum(text), text)
    return [found[v] for v in sorted(found)]


def plan(migrations: Sequence[Migration], applied: Sequence[AppliedMigration]) -> list[Migration]:
    """The migrations still to apply; raises MigrationError when the two sides disagree."""
    newest_known = max((m.version for m in migrations), default=0)
    newest_applied = max((a.version for a in applied), default=0)
    if newest_applied > newest_known:
        raise MigrationError(
            f"database schema version {newest_applied} is newer than this coordinator "
            f"({newest_known}); upgrade coordinator",
            database_version=newest_applied,
            code_version=newest_known,
        )
    by_version = {m.version: m for m in migrations}
    for row in applied:
        migration = by_version.get(row.version)
        if migration is None:
            raise MigrationError(
                f"migration {row.version:03d}_{row.name}.sql is recorded in the database "
                f"but missing from {sql_dir()}",
                version=row.version,
            )
        if migration.checksum != row.checksum:
            raise MigrationError(
                f"migration {migration.label} changed after it was applied to this database "
                f"(recorded checksum {row.checksum[:12]}, file {migration.checksum[:12]}); "
                "add a new migration instead of editing an applied one",
                version=row.version,
            )
    done = {a.version for a in applied}
    pending = [m for m in migrations if m.version not in done]
    for migration in pending:
        if migration.version < newest_applied:
            raise MigrationError(
                f"migration {migration.label} is older than the database's schema version "
                f"{newest_applied} but was never applied; renumber it",
                version=migration.version,
            )
    return pending


async def migrate(
    conn: asyncpg.Connection, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Apply what is missing; returns what this call applied (empty when up to date)."""
    migrations = load_migrations() if migrations is None else migrations
    with database_errors("migrate"):
        await conn.fetchval(query("lock_migrations"))
        try:
            await conn.execute(query("create_migrations_table"))
            applied = [
                AppliedMigration(r["version"], r["name"], r["checksum"])
                for r in await conn.fetch(query("list_applied_migrations"))
            ]
            pending = plan(migrations, applied)
            for migration in pending:
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            query("record_migration"),
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {migration.label} failed: {exc}", version=migration.version
                    ) from exc
            return pending
        finally:
            # A broken connection has lost the lock with its session already.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.fetchval(query("unlock_migrations"))


async def migrate_dsn(dsn: str, migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """``migrate`` on a connection of its own."""
    conn = await connect(dsn)
    try:
        return await migrate(conn, migrations)
    finally:
        await conn.close()


async def schema_version(conn: asyncpg.Connection) -> int:
    """The newest applied version, 0 for a database never migrated. Takes no lock."""
    with database_errors("read schema version"):
        if not await conn.fetchval(query("migrations_table_exists")):
            return 0
        rows = await conn.fetch(query("list_applied_migrations"))
    return max((r["version"] for r in rows), default=0)
