"""Every argv that --dry-run shows for configs/ must be accepted by the real pinned CLI.

The CLI validates its flags before anything else and writes ``system/init`` before its
first API request, so an accepted command line is one that reaches init (the API is
unreachable here: nothing is spent, nothing leaves the machine).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.commands.probe import ProbeError, probe_init
from runner.argv import user_turn_line

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.json"))

pytestmark = pytest.mark.claude


def planned(config: Path, workspace: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "--dry-run",
            "--json",
            "--config",
            str(config),
            "--workspace",
            str(workspace),
            "--skip-command-check",
            "--orchestration-id",
            "argv-test",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    instances: list[dict[str, object]] = json.loads(out.stdout)["instances"]
    return instances


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_planned_argv_is_accepted_by_the_real_cli(config: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for inst in planned(config, tmp_path):
        argv = [str(a) for a in inst["argv"]]  # type: ignore[attr-defined]
        if "--resume" in argv:  # nothing to resume in a fresh HOME: check the rest of the flags
            i = argv.index("--resume")
            argv[i] = "--session-id"
        turns = inst["stdin_turns"]
        first = user_turn_line(str(turns[0]), str(inst["session_id"])) if turns else None  # type: ignore[index]
        init = asyncio.run(probe_init(argv[0], tmp_path, home, 60, argv=argv, stdin_line=first))
        assert init["session_id"] == inst["session_id"]
        assert init["permissionMode"] == inst["permission_mode"]


def test_a_wrong_flag_is_caught(tmp_path: Path) -> None:
    """The check above can fail: the real parser rejects an unknown flag before init."""
    claude = str(ROOT / "node_modules" / ".bin" / "claude")
    argv = [
        claude,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-such-flag",
        "--",
        "hi",
    ]
    with pytest.raises(ProbeError):
        asyncio.run(probe_init(claude, tmp_path, tmp_path, 60, argv=argv))
