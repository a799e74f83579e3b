"""Discovery against the real pinned CLI's ``system/init``, and the probe's process hygiene.

Tests marked ``claude`` run ``node_modules/.bin/claude`` with a temporary HOME (never the
real ``~/.claude``) and an unreachable API: no network, no tokens. The probe mechanics are
also tested with small fake CLIs written as shell scripts.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psutil
import pytest

from coordinator.commands.builtins import BUILTIN_NAMES, OBSERVED_VERSION
from coordinator.commands.discovery import discover, scan
from coordinator.commands.probe import ProbeError, parse_init_line, probe_env, probe_init
from coordinator.errors import ClaudeNotFoundError

CLAUDE = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "claude"
needs_cli = pytest.mark.skipif(not os.access(CLAUDE, os.X_OK), reason="run 'make install'")


def write(path: Path, text: str = "body\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def living_members(pgid: int) -> list[psutil.Process]:
    """Processes still in the group (zombies waiting for an init that never reaps excluded)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


class Spawned:
    def __init__(self) -> None:
        self.pids: list[int] = []

    def __call__(self, pid: int) -> None:
        self.pids.append(pid)

    @property
    def pgid(self) -> int:
        [pid] = self.pids
        return pid


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace inside a repo inside a directory with its own commands, and a HOME."""
    top, home = tmp_path / "top", tmp_path / "home"
    repo = top / "repo"
    ws = repo / "ws"
    (repo / ".git").mkdir(parents=True)
    ws.mkdir()
    home.mkdir()
    commands, skills = ws / ".claude" / "commands", ws / ".claude" / "skills"
    user_commands, user_skills = home / ".claude" / "commands", home / ".claude" / "skills"
    write(top / ".claude" / "commands" / "above-repo.md")  # beyond the git root: not offered
    write(repo / ".claude" / "commands" / "repo-level.md")
    write(commands / "maketests.md", "---\ndescription: tests\n---\nWrite tests for $ARGUMENTS\n")
    write(commands / "testing" / "flakyfinder.md", "Find flaky tests in $0\n")
    write(commands / "a" / "b" / "deep.md")
    write(commands / ".hidden.md")
    write(commands / "notes.txt")
    write(commands / "Upper.MD")
    write(commands / "empty.md", "")
    write(commands / "badfm.md", "---\ndescription: [unclosed\n: nonsense\n---\nbody\n")
    write(commands / "shared.md", "project\n")
    write(commands / "init.md", "my init\n")  # shadows a built-in
    write(commands / "secret.md", "---\nuser-invocable: false\n---\nhidden\n")
    write(commands / "compact.md", "---\nuser-invocable: no\n---\nhides the built-in\n")
    write(commands / "zz.md")
    (commands / "aa.md").symlink_to("zz.md")  # one file, offered once
    write(skills / "release-notes" / "SKILL.md", "---\nname: relnotes\n---\nNotes\n")
    write(skills / "lower" / "skill.md")
    write(skills / "x" / "SKILL.md", "skill beats command\n")
    write(commands / "x.md")
    write(user_commands / "shared.md", "user wins\n")
    write(user_commands / "tools" / "lint.md")
    write(user_skills / "uskill" / "SKILL.md", "---\ndescription: user skill\n---\nus\n")
    write(user_skills / "hidden-skill" / "SKILL.md", "---\nuser-invocable: false\n---\nh\n")
    return ws, home


@pytest.mark.claude
@needs_cli
async def test_discovery_equals_cli_slash_commands(layout: tuple[Path, Path]) -> None:
    ws, home = layout
    spawned = Spawned()
    event = await probe_init(str(CLAUDE), ws, home, on_start=spawned)
    assert living_members(spawned.pgid) == []
    assert not psutil.pid_exists(spawned.pgid)

    result = scan(ws, home)
    assert result.names() == set(event["slash_commands"])
    custom = {c.name: c.source for c in result.commands if c.source != "builtin"}
    assert custom == {
        "repo-level": "project",
        "maketests": "project",
        "testing:flakyfinder": "project",
        "a:b:deep": "project",
        ".hidden": "project",
        "empty": "project",
        "badfm": "project",
        "shared": "user",
        "init": "project",
        "aa": "project",
        "release-notes": "project-skill",
        "x": "project-skill",
        "tools:lint": "user",
        "uskill": "user-skill",
    }
    assert "compact" not in result.names()
    assert event["memory_paths"]["auto"].startswith(str(home))  # the real HOME was not used


@pytest.mark.claude
@needs_cli
async def test_builtins_match_the_pinned_cli(tmp_path: Path) -> None:
    ws, home = tmp_path / "ws", tmp_path / "home"
    ws.mkdir()
    home.mkdir()
    event = await probe_init(str(CLAUDE), ws, home)
    assert event["claude_code_version"] == OBSERVED_VERSION, "re-observe builtins.py"
    assert set(event["slash_commands"]) == BUILTIN_NAMES
    assert {c.name for c in discover(ws, home)} == BUILTIN_NAMES


# ---------------------------------------------------------------- probe mechanics


def fake_cli(tmp_path: Path, script: str) -> str:
    path = tmp_path / "fake-claude"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


INIT = '{"type":"system","subtype":"init","slash_commands":["x"]}'


async def test_probe_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    big = "x" * 200_000  # longer than asyncio's default 64 KiB line limit
    claude = fake_cli(
        tmp_path,
        f"trap '' TERM\nsleep 300 &\necho 'not json'\necho '{{\"big\":\"{big}\"}}'\n"
        f"echo '{INIT}'\nwait\n",
    )
    spawned = Spawned()
    event = await probe_init(claude, tmp_path, tmp_path, kill_grace=0.2, on_start=spawned)
    assert event["slash_commands"] == ["x"]
    assert living_members(spawned.pgid) == []


async def test_probe_reports_an_exit_without_init(tmp_path: Path) -> None:
    claude = fake_cli(tmp_path, "echo '{\"type\":\"result\"}'\necho 'boom: bad flag' >&2\nexit 3\n")
    with pytest.raises(ProbeError, match=r"exited without a system/init event \(exit 3\): boom"):
        await probe_init(claude, tmp_path, tmp_path)


async def test_probe_times_out_and_cleans_up(tmp_path: Path) -> None:
    claude = fake_cli(tmp_path, "sleep 300 &\nwait\n")
    spawned = Spawned()
    with pytest.raises(ProbeError, match=r"no system/init event within 0\.3s"):
        await probe_init(claude, tmp_path, tmp_path, timeout=0.3, on_start=spawned)
    assert living_members(spawned.pgid) == []


async def test_probe_missing_binary_or_workspace(tmp_path: Path) -> None:
    with pytest.raises(ClaudeNotFoundError):
        await probe_init(str(tmp_path / "no-claude"), tmp_path)
    claude = fake_cli(tmp_path, f"echo '{INIT}'\n")
    with pytest.raises(ProbeError, match="cannot enter workspace"):
        await probe_init(claude, tmp_path / "missing")


def test_probe_env_isolates_home_and_network(tmp_path: Path) -> None:
    base = {"CLAUDECODE": "1", "CLAUDE_CONFIG_DIR": "/real", "HOME": "/root", "PATH": "/bin"}
    env = probe_env(tmp_path, base)
    assert "CLAUDECODE" not in env and "CLAUDE_CONFIG_DIR" not in env
    assert env["HOME"] == str(tmp_path) and env["PATH"] == "/bin"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["ANTHROPIC_API_KEY"]
    kept = probe_env(None, {"ANTHROPIC_API_KEY": "real"}, placeholder_key=False)
    assert kept["ANTHROPIC_API_KEY"] == "real"
    assert "ANTHROPIC_API_KEY" not in probe_env(None, {}, placeholder_key=False)


def test_parse_init_line() -> None:
    assert parse_init_line(INIT.encode()) == {
        "type": "system",
        "subtype": "init",
        "slash_commands": ["x"],
    }
    for line in (b"", b"noise", b"{broken", b'{"type":"system","subtype":"status"}', b"[1]"):
        assert parse_init_line(line) is None
