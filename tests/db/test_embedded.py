"""The embedded server: started once, reused, shared by concurrent starters, stoppable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.db.embedded import (
    embedded_server_running,
    ensure_embedded_server,
    pgdata_dir,
    run_isolated,
    stop_embedded_server,
)
from coordinator.db.postgres import connect
from coordinator.errors import DatabaseError
from tests.pg import scratch_state_dir

pytestmark = pytest.mark.postgres

START = (
    "import sys; from pathlib import Path; "
    "from coordinator.db.embedded import ensure_embedded_server; "
    "print(ensure_embedded_server(Path(sys.argv[1])))"
)


def current_database(dsn: str) -> str:
    async def query() -> str:
        conn = await connect(dsn)
        try:
            name: str = await conn.fetchval("SELECT current_database()")
            return name
        finally:
            await conn.close()

    return run_isolated(query())


def start_in_subprocess(state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", START, str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_started_once_then_reused_by_other_processes(pg_state_dir: Path) -> None:
    # Two processes start it at the same time on an empty state dir.
    procs = [start_in_subprocess(pg_state_dir) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    dsns = {out.strip() for out, _ in outputs}
    assert len(dsns) == 1
    (dsn,) = dsns
    assert current_database(dsn) == "coordinator"
    # It outlived both processes; this one reuses it.
    assert embedded_server_running(pg_state_dir)
    assert ensure_embedded_server(pg_state_dir) == dsn
    assert (pgdata_dir(pg_state_dir) / "PG_VERSION").is_file()

    assert stop_embedded_server(pg_state_dir)
    assert not embedded_server_running(pg_state_dir)
    assert not stop_embedded_server(pg_state_dir)


def test_stop_when_never_started(tmp_path: Path) -> None:
    assert not stop_embedded_server(tmp_path)


def test_state_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path))
    # (As root, a state dir the pgserver user cannot reach puts pgdata elsewhere.)
    assert pgdata_dir() == pgdata_dir(tmp_path)
    assert pgdata_dir().name == "pgdata"


def test_path_with_spaces_is_refused_clearly() -> None:
    with scratch_state_dir() as state_dir, pytest.raises(DatabaseError, match="path with spaces"):
        ensure_embedded_server(state_dir / "Application Support")
