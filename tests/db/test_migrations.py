from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from coordinator.db.migrations import (
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    migrate_dsn,
    schema_version,
    sql_dir,
)
from coordinator.db.postgres import connect, query
from coordinator.errors import DatabaseError

pytestmark = pytest.mark.postgres


def write(directory: Path, files: dict[str, str]) -> list[Migration]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return load_migrations(directory)


async def applied(dsn: str) -> list[tuple[int, str]]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM coordinator_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def test_from_empty_creates_the_schema(pg_empty_dsn: str) -> None:
    done = await migrate_dsn(pg_empty_dsn)
    assert [m.label for m in done] == [m.label for m in load_migrations()]
    assert done[0].label == "001_initial.sql"
    conn = await connect(pg_empty_dsn)
    try:
        tables = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_class"
                " WHERE relkind IN ('r', 'v') AND relnamespace = 'public'::regnamespace"
            )
        }
        assert {
            "coordinator_migrations",
            "orchestrations",
            "instances",
            "scenario_orchestration_checkpoints",
            "scenario_latest_progress",
        } <= tables
        assert await schema_version(conn) == done[-1].version
    finally:
        await conn.close()


async def test_schema_version_of_a_blank_database(pg_empty_dsn: str) -> None:
    conn = await connect(pg_empty_dsn)
    try:
        assert await schema_version(conn) == 0
    finally:
        await conn.close()


async def test_reapplying_is_a_no_op(pg_empty_dsn: str) -> None:
    await migrate_dsn(pg_empty_dsn)
    before = await applied(pg_empty_dsn)
    assert await migrate_dsn(pg_empty_dsn) == []
    assert await applied(pg_empty_dsn) == before


async def test_new_files_are_applied_in_order(pg_empty_dsn: str, tmp_path: Path) -> None:
    first = write(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);"})
    assert [m.version for m in await migrate_dsn(pg_empty_dsn, first)] == [1]
    # 003 only works after 002; the files are listed out of order on purpose.
    more = write(
        tmp_path, {"003_c.sql": "INSERT INTO b VALUES (1);", "002_b.sql": "CREATE TABLE b (x int);"}
    )
    assert [m.version for m in await migrate_dsn(pg_empty_dsn, more)] == [2, 3]
    assert await applied(pg_empty_dsn) == [(1, "a"), (2, "b"), (3, "c")]


async def test_a_failing_file_leaves_nothing_behind(pg_empty_dsn: str, tmp_path: Path) -> None:
    files = write(
        tmp_path,
        {
            "001_a.sql": "CREATE TABLE a (x int);",
            "002_b.sql": "CREATE TABLE b (x int); SELECT 1 / 0;",
        },
    )
    with pytest.raises(MigrationError, match=re.escape("002_b.sql failed: division by zero")):
        await migrate_dsn(pg_empty_dsn, files)
    assert await applied(pg_empty_dsn) == [(1, "a")]
    conn = await connect(pg_empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('b')") is None
        # The migration lock was released with the failure.
        assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(pg_empty_dsn: str) -> None:
    """Several migrators start together; one applies everything, the others find it done.

    A third connection holds the migration lock until every migrator is queued on it, so
    they really do contend rather than run one after the other by chance.
    """
    holder = await connect(pg_empty_dsn)
    try:
        await holder.fetchval(query("lock_migrations"))
        runs = [asyncio.create_task(migrate_dsn(pg_empty_dsn)) for _ in range(4)]
        async with asyncio.timeout(30):
            while await holder.fetchval(  # noqa: ASYNC110 (polling a condition, with a timeout)
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ) < len(runs):
                await asyncio.sleep(0.01)
        await holder.fetchval(query("unlock_migrations"))
        results = await asyncio.gather(*runs)
    finally:
        await holder.close()
    applied_counts = sorted(len(r) for r in results)
    assert applied_counts == [0, 0, 0, len(load_migrations())]
    assert [v for v, _ in await applied(pg_empty_dsn)] == [m.version for m in load_migrations()]


async def test_newer_database_is_refused(pg_dsn: str) -> None:
    newest = load_migrations()[-1].version
    conn = await connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO coordinator_migrations (version, name, checksum)"
            " VALUES ($1, 'future', 'x')",
            newest + 2,
        )
        with pytest.raises(DatabaseError) as caught:
            await migrate(conn)
    finally:
        await conn.close()
    assert str(caught.value) == (
        f"database schema version {newest + 2} is newer than this coordinator ({newest}); "
        "upgrade coordinator"
    )


async def test_changed_checksum_is_refused(pg_empty_dsn: str, tmp_path: Path) -> None:
    await migrate_dsn(pg_empty_dsn, write(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);"}))
    edited = write(tmp_path, {"001_a.sql": "CREATE TABLE a (x bigint);"})
    with pytest.raises(MigrationError, match=re.escape("001_a.sql changed after it was applied")):
        await migrate_dsn(pg_empty_dsn, edited)


async def test_crlf_checkout_is_the_same_file(pg_empty_dsn: str, tmp_path: Path) -> None:
    await migrate_dsn(pg_empty_dsn, write(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);\n"}))
    (tmp_path / "001_a.sql").write_bytes(b"CREATE TABLE a (x int);\r\n")
    assert await migrate_dsn(pg_empty_dsn, load_migrations(tmp_path)) == []


async def test_applied_file_missing_is_refused(pg_empty_dsn: str, tmp_path: Path) -> None:
    await migrate_dsn(
        pg_empty_dsn,
        write(tmp_path / "v1", {"001_a.sql": "SELECT 1;", "002_b.sql": "SELECT 2;"}),
    )
    gap = write(tmp_path / "v2", {"001_a.sql": "SELECT 1;", "003_c.sql": "SELECT 3;"})
    with pytest.raises(
        MigrationError, match=re.escape("002_b.sql is recorded in the database but missing")
    ):
        await migrate_dsn(pg_empty_dsn, gap)


async def test_file_older_than_the_database_is_refused(pg_empty_dsn: str, tmp_path: Path) -> None:
    await migrate_dsn(
        pg_empty_dsn, write(tmp_path, {"001_a.sql": "SELECT 1;", "003_c.sql": "SELECT 3;"})
    )
    late = write(tmp_path, {"002_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match=re.escape("002_b.sql is older than")):
        await migrate_dsn(pg_empty_dsn, late)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"1-bad.sql": ""}, "named NNN_name.sql"),
        ({"001_a.sql": "", "1_b.sql": ""}, "also used by"),
        ({"000_a.sql": ""}, "start at 1"),
    ],
)
def test_bad_file_names_are_refused(tmp_path: Path, files: dict[str, str], problem: str) -> None:
    with pytest.raises(MigrationError, match=problem):
        write(tmp_path, files)


def test_sql_dir_default_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (sql_dir() / "001_initial.sql").is_file()
    monkeypatch.setenv("COORDINATOR_SQL_DIR", str(tmp_path))
    assert sql_dir() == tmp_path
    assert load_migrations() == []
