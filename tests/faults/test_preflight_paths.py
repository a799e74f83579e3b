"""Results are never lost to a path nobody can write: before anything launches, a run tries
the results path, the log file, the state directory and every workspace, as the user who
runs, and refuses in one line (exit 2). The cases fail for root too (a path under a regular
file, /proc), since CI runs as root; the permission-bit case skips only as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.bad_input import Sandbox, assert_refused

CONFIG = {"instances": [{"command": "go", "name": "a", "permission_mode": "acceptEdits"}]}


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    (tmp_path / "afile").write_text("a regular file\n")
    return Sandbox(tmp_path)


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--output", "afile/results.json"], ["results afile/results.json", "is not a directory"]),
        (["--output", "/proc/results.json"], ["results /proc/results.json", "cannot write"]),
        (["--output", "."], ["results . is a directory"]),
        (["--workspace", "afile"], ["instance a: workspace", "afile is not a directory"]),
        (["--log-file", "afile/run.log"], ["--log-file afile/run.log", "is not a directory"]),
        (["--log-file", "/proc/run.log"], ["--log-file /proc/run.log", "cannot write"]),
        (["--log-file", "."], ["--log-file . is a directory"]),
    ],
)
def test_unwritable_paths_are_refused_before_launch(
    box: Sandbox, flags: list[str], fragments: list[str]
) -> None:
    out = box.run("run", "--config", str(box.config(CONFIG)), "--no-db", *flags)
    assert_refused(out, *fragments)
    assert not box.marker.exists()
    assert not list(box.root.rglob(".coordinator-preflight-*"))  # the probes are removed


@pytest.mark.parametrize("where", ["afile/ws", "/proc/ws"])
def test_create_workspaces_where_nothing_can_be_created(box: Sandbox, where: str) -> None:
    config = {"orchestration": {"create_workspaces": True, "workspace": where}, **CONFIG}
    out = box.run("run", "--config", str(box.config(config)), "--no-db")
    assert_refused(out, "instance a: workspace", where.split("/")[-2])
    assert not box.marker.exists()


def test_log_file_from_the_environment_is_refused(box: Sandbox) -> None:
    env = box.env(COORDINATOR_LOG_FILE=str(box.root / "afile" / "x.log"))
    out = box.run("run", "--config", str(box.config(CONFIG)), "--no-db", env=env)
    assert_refused(out, "COORDINATOR_LOG_FILE", "is not a directory")
    assert not box.marker.exists()


def test_unwritable_home(box: Sandbox) -> None:
    """The state directory lives under HOME: a run with a database refuses in one line and
    names --no-db; --no-db runs (one warning: no log file); --dry-run needs neither."""
    env = box.env(HOME=str(box.root / "afile" / "home"))
    del env["COORDINATOR_STATE_DIR"]
    config = str(box.config(CONFIG))
    assert_refused(box.run("run", "--config", config, env=env), "state directory", "--no-db")
    assert not box.marker.exists()

    dry = box.run("--dry-run", "--config", config, env=env)
    assert dry.returncode == 0 and dry.stderr == "", dry.stderr

    out = box.run("run", "--config", config, "--no-db", "--output", "r.json", env=env)
    assert box.marker.exists()  # it launched
    assert (box.root / "r.json").exists()
    warnings = [ln for ln in out.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "no log file" in warnings[0], out.stderr
    assert "Traceback" not in out.stderr


def test_dry_run_creates_nothing(box: Sandbox) -> None:
    config = {"orchestration": {"create_workspaces": True, "workspace": "new/ws"}, **CONFIG}
    out = box.run("--dry-run", "--config", str(box.config(config)), "--log-file", "logs/x.log")
    assert out.returncode == 0, out.stderr
    assert not (box.root / "new").exists() and not (box.root / "logs").exists()
    assert not (box.root / "state").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_workspace_is_refused(box: Sandbox) -> None:
    ws = box.root / "ro"
    ws.mkdir(mode=0o555)
    out = box.run("run", "--config", str(box.config(CONFIG)), "--no-db", "--workspace", str(ws))
    assert_refused(out, f"workspace {ws}", "cannot write there")
    assert not box.marker.exists()
