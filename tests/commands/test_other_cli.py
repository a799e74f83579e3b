"""Discovery with a claude of another version than the pinned one: asked, cached, invalidated.

The other CLI is a real older release (``OTHER_VERSION``) installed from the npm registry
into ``.cache/claude-cli/`` (git-ignored) the first time; its built-ins differ from the
pinned one's (it has ``/review``, the pin has not). Each claude is reached through a
recording shim (a shell script that logs its argv and execs the real binary), so the
tests see how often the CLI was asked: a probe is the one call with ``-p``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.claude_bin import PROJECT_LOCAL, PROJECT_ROOT
from coordinator.commands import asked
from coordinator.commands.asked import CACHE_NAME, builtins_for
from coordinator.commands.builtins import RECORDED, Builtins
from coordinator.commands.probe import probe_init_sync

pytestmark = pytest.mark.claude

OTHER_VERSION = "2.1.197"
OTHER_ROOT = PROJECT_ROOT / ".cache" / "claude-cli" / OTHER_VERSION
NPM_INSTALL = ("npm", "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error")


@pytest.fixture(scope="session")
def other_claude() -> Path:
    """The real claude ``OTHER_VERSION``, installed project-locally on first use."""
    binary = OTHER_ROOT / "node_modules" / ".bin" / "claude"
    if not os.access(binary, os.X_OK):
        OTHER_ROOT.mkdir(parents=True, exist_ok=True)
        (OTHER_ROOT / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            [*NPM_INSTALL, f"@anthropic-ai/claude-code@{OTHER_VERSION}"],
            cwd=OTHER_ROOT,
            stdin=subprocess.DEVNULL,
            check=True,
            timeout=600,
        )
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(OTHER_VERSION), out.stdout
    return binary


@pytest.fixture(scope="session")
def pinned_claude() -> Path:
    if not os.access(PROJECT_LOCAL, os.X_OK):
        pytest.fail("pinned claude missing: run 'make install'")
    return PROJECT_LOCAL


@dataclass
class Shim:
    """``path`` runs ``target`` (changeable) and logs each call's argv to ``log``."""

    path: Path
    log: Path

    def point_at(self, target: Path) -> None:
        self.path.write_text(
            f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{self.log}'\nexec '{target}' \"$@\"\n"
        )
        self.path.chmod(0o755)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def probes(self) -> int:
        return sum(1 for call in self.calls() if call.split()[:1] == ["-p"])


@pytest.fixture
def shim(tmp_path: Path) -> Shim:
    (tmp_path / "bin").mkdir()
    return Shim(tmp_path / "bin" / "claude", tmp_path / "calls.log")


@dataclass
class Layout:
    workspace: Path
    home: Path
    state: Path


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """A workspace in a git repo with a project command and skill; a HOME with a user one."""
    ws, home, state = tmp_path / "repo" / "ws", tmp_path / "home", tmp_path / "state"
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    for path in (
        ws / ".claude" / "commands" / "mine.md",
        ws / ".claude" / "commands" / "init.md",  # shadows a built-in of both versions
        ws / ".claude" / "skills" / "notes" / "SKILL.md",
        home / ".claude" / "commands" / "tools" / "lint.md",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("body\n")
    return Layout(ws, home, state)


def coordinator(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "COORDINATOR_"))}
    env |= {"HOME": str(layout.home), "COORDINATOR_STATE_DIR": str(layout.state)}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        cwd=layout.workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(layout: Layout, claude: Path) -> tuple[set[str], str]:
    done = coordinator(
        layout, "--list-commands", "--json", "--claude-bin", str(claude), "--workspace", "."
    )
    assert done.returncode == 0, done.stderr
    return {c["name"] for c in json.loads(done.stdout)}, done.stderr


def own_slash_commands(claude: Path, layout: Layout) -> set[str]:
    """What that CLI itself offers in the layout's workspace with the layout's HOME."""
    event = probe_init_sync(str(claude), layout.workspace, layout.home)
    return set(event["slash_commands"])


def test_list_commands_equals_the_other_cli_and_is_asked_once(
    other_claude: Path, pinned_claude: Path, shim: Shim, layout: Layout
) -> None:
    shim.point_at(other_claude)
    names, stderr = listed(layout, shim.path)
    truth = own_slash_commands(other_claude, layout)
    assert names == truth
    assert "review" in names and "review" not in RECORDED.names  # the versions differ
    assert {"mine", "notes", "tools:lint", "init"} <= names
    assert shim.probes() == 1
    assert f"({OTHER_VERSION}) for its built-ins; cached in" in stderr

    cache = layout.state / CACHE_NAME
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    before = cache.read_bytes()
    assert list(json.loads(before)["versions"]) == [OTHER_VERSION]
    assert list(layout.state.iterdir()) == [cache]  # no temporary file left behind

    again, stderr = listed(layout, shim.path)  # the second time: from the cache
    assert again == truth
    assert shim.probes() == 1 and stderr == ""
    assert cache.read_bytes() == before

    # --inspect-command knows the other version's built-in; the pinned claude does not.
    done = coordinator(layout, "--inspect-command", "/review", "--claude-bin", str(shim.path))
    assert done.returncode == 0 and "built-in command" in done.stdout, done.stderr
    done = coordinator(layout, "--inspect-command", "/review", "--claude-bin", str(pinned_claude))
    assert done.returncode == 2 and "unknown slash command '/review'" in done.stderr
    assert shim.probes() == 1


def test_a_version_change_asks_again(
    other_claude: Path,
    pinned_claude: Path,
    shim: Shim,
    layout: Layout,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shim's claude is upgraded under the same path: the cached answer is not reused.
    (The recorded list is set aside so that the pin, too, counts as another version.)"""
    monkeypatch.setattr(asked, "RECORDED", Builtins("0.0.0-none", frozenset(), frozenset()))
    notes: list[str] = []
    shim.point_at(other_claude)
    first = builtins_for(str(shim.path), layout.state, warn=notes.append)
    assert (first.builtins.version, first.builtins.source) == (OTHER_VERSION, "probe")
    assert "review" in first.builtins.names

    shim.point_at(pinned_claude)
    second = builtins_for(str(shim.path), layout.state, warn=notes.append)
    assert (second.builtins.version, second.builtins.source) == (RECORDED.version, "probe")
    assert second.builtins.names == RECORDED.names  # the pin's own, not the cached answer
    assert shim.probes() == 2

    shim.point_at(other_claude)  # and back: both versions stay cached
    third = builtins_for(str(shim.path), layout.state, warn=notes.append)
    assert (third.builtins.source, third.builtins.names) == ("cache", first.builtins.names)
    assert shim.probes() == 2
    cached = json.loads((layout.state / CACHE_NAME).read_text())["versions"]
    assert sorted(cached) == sorted([OTHER_VERSION, str(RECORDED.version)])
    assert notes == []


def test_corrupt_cache_is_ignored_with_one_line(
    other_claude: Path, shim: Shim, layout: Layout
) -> None:
    layout.state.mkdir()
    cache = layout.state / CACHE_NAME
    cache.write_text('{"format": 1, "versions": {"2.1.197": {"names": "not a list"')
    shim.point_at(other_claude)
    names, stderr = listed(layout, shim.path)
    assert names == own_slash_commands(other_claude, layout)
    warnings = [line for line in stderr.splitlines() if line.endswith(": ignored")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"note: slash command cache {cache}: not JSON")
    assert shim.probes() == 1
    assert list(json.loads(cache.read_text())["versions"]) == [OTHER_VERSION]  # rewritten
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


@pytest.fixture
def review_config(layout: Layout) -> Iterator[Path]:
    config = layout.workspace / "review.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"workspace": "."},
                "instances": [{"name": "r", "command": "/review the last commit"}],
            }
        )
    )
    yield config


def test_check_before_launching_uses_the_claude_that_will_run(
    other_claude: Path, pinned_claude: Path, shim: Shim, layout: Layout, review_config: Path
) -> None:
    shim.point_at(other_claude)
    done = coordinator(
        layout, "--dry-run", "--config", str(review_config), "--claude-bin", str(shim.path)
    )
    assert done.returncode == 0, done.stderr
    assert "slash command" not in done.stdout + done.stderr
    assert shim.probes() == 1

    # The pinned claude has no /review: the same config is refused before any launch.
    done = coordinator(
        layout,
        "run",
        "--no-db",
        "--offline",
        "--config",
        str(review_config),
        "--claude-bin",
        str(pinned_claude),
    )
    assert done.returncode == 2
    assert "instance r: unknown slash command '/review'" in done.stderr
