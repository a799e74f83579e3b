"""The database a run will persist to is checked before anything launches: a malformed or
unreachable one is one line naming ``--no-db`` and exit 2 (never a run without
persistence that exits 0); an orchestration id already recorded is exit 2 too."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.faults.harness import answer, start_run
from tests.pg import DedicatedServer


def _refused(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    started = tmp_path / "launched"
    run = start_run(tmp_path, {"a": [{"marker": str(started)}]}, args=args)
    code = run.wait(timeout=60)
    return code, run.stderr + run.stdout, started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    ["mysql://user@host/db", "not a url", "host=localhost dbname=x password=hunter2"],
)
def test_a_malformed_database_url_is_refused_before_launching(tmp_path: Path, url: str) -> None:
    code, output, launched = _refused(tmp_path, "--database-url", url)
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--no-db" in lines[0] and "Traceback" not in output, output
    assert "hunter2" not in output
    assert not launched.exists()


def test_an_unreachable_database_is_refused_before_launching(tmp_path: Path) -> None:
    url = f"postgresql://coordinator:s3cret-pw@127.0.0.1:{_free_port()}/nothing"
    code, output, launched = _refused(tmp_path, "--database-url", url)
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unreachable" in lines[0] and "--no-db" in lines[0], output
    assert "s3cret-pw" not in output
    assert not launched.exists()


@pytest.mark.postgres
def test_an_orchestration_id_already_recorded_is_refused(
    tmp_path: Path, pg_dedicated_server: DedicatedServer
) -> None:
    args = ["--database-url", pg_dedicated_server.dsn, "--orchestration-id", "taken"]
    (tmp_path / "one").mkdir()
    first = start_run(tmp_path / "one", {"a": [{"lines": answer("m1", 1, 1)}]}, args=args)
    assert first.wait(timeout=60) == 0, first.stderr
    (tmp_path / "two").mkdir()
    code, output, launched = _refused(tmp_path / "two", *args)
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'taken' already exists" in lines[0], output
    assert not launched.exists()
