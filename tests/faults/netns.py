"""Hosts of their own for the fleet's fault tests: network namespaces on a bridge, and a
Postgres that listens on TCP (with a password) on the bridge's address only.

Each namespace gets a veth pair: one end inside (``10.N.0.(10+k)/24``), the other enslaved to
a bridge on the root namespace (``10.N.0.1/24``), where Postgres and the offline model server
listen. Taking a namespace's outer end down cuts that host off the database (and the model
server) and nobody else: a genuine partition. Everything is torn down at the end, on every
path. Needs root and iproute2 (``ip``); :func:`netns_unavailable` says why not in one line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.db import embedded


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_unavailable() -> str | None:
    """None when namespaces can be made here; else the reason, in one line."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, as CI does)"
    if shutil.which("ip") is None:
        return "iproute2's ip is missing (make iproute2, as root, installs Debian's iproute2)"
    probe = f"cprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Namespace:
    name: str  # the netns
    outer: str  # the veth end on the bridge (root namespace): down = cut off
    address: str

    def exec_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def cut(self) -> None:
        _ip("link", "set", self.outer, "down")

    def mend(self) -> None:
        """The link back, and usable before this returns: the bridge port forwarding and
        the namespace's neighbour entries of the cut (failed lookups) gone. Without the
        wait, a connection made at once could still fail with EHOSTUNREACH."""
        _ip("link", "set", self.outer, "up")
        _ip("netns", "exec", self.name, "ip", "neigh", "flush", "all", check=False)
        port = Path("/sys/class/net") / self.outer
        deadline = time.monotonic() + 15
        while not (
            (port / "operstate").read_text().strip() == "up"
            and (port / "brport" / "state").read_text().strip() == "3"  # forwarding
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.outer} did not come back up within 15 s")
            time.sleep(0.02)

    def pids(self) -> list[int]:
        """Processes in this namespace (none left = no orphans on this host)."""
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]


@dataclass
class Lab:
    gateway: str  # the bridge's address: Postgres and the model server listen here
    namespaces: list[Namespace] = field(default_factory=list)


@contextlib.contextmanager
def lab(count: int) -> Iterator[Lab]:
    """``count`` namespaces on one bridge; removed (with any process left in them) at the
    end, whatever happened."""
    tag = f"{os.getpid() % 10000}"
    net = 10 + os.getpid() % 200
    bridge = f"cbr{tag}"
    made = Lab(gateway=f"10.{net}.0.1")
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{made.gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for k in range(count):
            ns = Namespace(f"cns{tag}-{k}", f"cvo{tag}-{k}", f"10.{net}.0.{10 + k}")
            inner = f"cvi{tag}-{k}"
            _ip("netns", "add", ns.name)
            made.namespaces.append(ns)
            _ip("link", "add", ns.outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns.name)
            _ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", inner)
            _ip("-n", ns.name, "link", "set", "lo", "up")
            _ip("-n", ns.name, "link", "set", inner, "up")
            _ip("link", "set", ns.outer, "master", bridge)
            _ip("link", "set", ns.outer, "up")
        yield made
    finally:
        for ns in made.namespaces:
            for pid in ns.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _ip("netns", "del", ns.name, check=False)  # its veth pair goes with it
            _ip("link", "del", ns.outer, check=False)
        _ip("link", "del", bridge, check=False)


@contextlib.contextmanager
def tcp_postgres(address: str) -> Iterator[str]:
    """A Postgres of the test's own listening on ``address`` (TCP, scram-sha-256 password
    auth, a random password never printed) and a unix socket of its own; the DSN of its
    database ``coordinator``. Run with the embedded server's binaries and, as root, as its
    OS user. Stopped and removed at the end."""
    pg = embedded._pgserver()
    version = pg.TARGET_POSTGRES_VERSION
    user = embedded._server_user(create=True)
    bin_path = embedded._install(pg.POSTGRES_VERSIONS[version], version, user)
    as_user = user.subprocess_kwargs() if user else {}
    top = Path(tempfile.mkdtemp(prefix="coordinator-test-tcp-pg-"))
    top.chmod(0o755)
    pgdata, sockets, pwfile = top / "pgdata", top / "sock", top / "pw"
    password = secrets.token_hex(16)
    with socket.socket() as probe:
        probe.bind((address, 0))
        port = probe.getsockname()[1]
    try:
        for directory in (pgdata, sockets):
            directory.mkdir(mode=0o700)
            if user is not None:
                os.chown(directory, user.uid, user.gid)
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        if user is not None:
            os.chown(pwfile, user.uid, user.gid)
        subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "coord",
                f"--pwfile={pwfile}",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            cwd="/",
            timeout=120,
            **as_user,
        )
        pwfile.unlink()
        with (pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all coord {address.rsplit('.', 1)[0]}.0/24 scram-sha-256\n")
        options = f"-h {address} -p {port} -k {sockets} -c max_connections=200"
        subprocess.run(
            [
                str(bin_path / "pg_ctl"),
                "-w",
                "-D",
                str(pgdata),
                "-o",
                options,
                "-l",
                str(pgdata / "log"),
                "start",
            ],
            check=True,
            capture_output=True,
            cwd="/",
            timeout=120,
            **as_user,
        )
        base = f"postgresql://coord:{password}@{address}:{port}"
        _create_database(f"{base}/postgres", "coordinator")
        yield f"{base}/coordinator"
    finally:
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(
                [str(bin_path / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"],
                capture_output=True,
                cwd="/",
                timeout=60,
                **as_user,
            )
        shutil.rmtree(top, ignore_errors=True)


def _create_database(admin_dsn: str, name: str) -> None:
    from coordinator.db.embedded import run_isolated
    from coordinator.db.postgres import connect, create_database

    async def create() -> None:
        conn = await connect(admin_dsn)
        try:
            await create_database(conn, name, template=None)
        finally:
            await conn.close()

    run_isolated(create())
