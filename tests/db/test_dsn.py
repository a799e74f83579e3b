from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.db.dsn import database_name, mask_dsn, resolve_dsn, with_database
from coordinator.errors import DatabaseError

URL = "postgresql://u:secret@db.example:5432/coord"


@pytest.mark.parametrize(
    ("explicit", "environ", "source"),
    [
        (
            URL,
            {"COORDINATOR_DATABASE_URL": "postgres://a/b", "DATABASE_URL": "postgres://c/d"},
            "flag",
        ),
        (
            None,
            {"COORDINATOR_DATABASE_URL": URL, "DATABASE_URL": "postgres://c/d"},
            "COORDINATOR_DATABASE_URL",
        ),
        (None, {"COORDINATOR_DATABASE_URL": "  ", "DATABASE_URL": URL}, "DATABASE_URL"),
        ("", {"DATABASE_URL": URL}, "DATABASE_URL"),
    ],
)
def test_precedence(explicit: str | None, environ: dict[str, str], source: str) -> None:
    resolved = resolve_dsn(explicit, environ=environ)
    assert (resolved.dsn, resolved.source) == (URL, source)
    assert "secret" not in resolved.masked


@pytest.mark.postgres
def test_embedded_is_the_last_resort(pg_state_dir: Path) -> None:
    resolved = resolve_dsn(None, environ={}, state_dir=pg_state_dir)
    assert resolved.source == "embedded"
    assert database_name(resolved.dsn) == "coordinator"


def test_non_url_is_refused_without_showing_the_password() -> None:
    with pytest.raises(DatabaseError) as caught:
        resolve_dsn("host=db password=hunter2 dbname=x", environ={})
    assert "hunter2" not in str(caught.value)
    assert "--database-url" in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (URL, "postgresql://u:***@db.example:5432/coord"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://postgres:@/coordinator?host=/tmp/x",
            "postgresql://postgres:@/coordinator?host=/tmp/x",
        ),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://h/db?user=u&password=pw&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        ("host=h PASSWORD=x", "host=h PASSWORD=***"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_with_database_keeps_server_and_options() -> None:
    assert (
        with_database("postgresql://postgres:@/postgres?host=/tmp/s", "t_1")
        == "postgresql://postgres:@/t_1?host=/tmp/s"
    )
    assert database_name(URL) == "coord"
    assert database_name("postgresql://h") is None
