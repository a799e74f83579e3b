"""``orchestration.isolate_config_dir`` does what it says, through the real pinned claude
against the offline server: each instance runs with a CLAUDE_CONFIG_DIR of its own (its
transcript lands there, not in the user's), authenticates with the user's ``claude login``
(copied, 0600; no API key in the environment) and completes; the directory is gone after."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.engine.config_dir import create_config_dir, remove_config_dir
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import InstanceState, Status
from coordinator.offline.server import ModelServer
from coordinator.plan import PlannedInstance
from tests.e2e.harness import base_env, offline_plan

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK), reason=f"pinned claude CLI not at {PROJECT_LOCAL}"
    ),
]

# Where the instance's own Bash tool says it ran: the config dir, its files, its transcripts.
PROBE = (
    'echo "$CLAUDE_CONFIG_DIR" > where.txt; '
    'stat -c "%a %n" "$CLAUDE_CONFIG_DIR" "$CLAUDE_CONFIG_DIR"/.credentials.json > modes.txt; '
    'find "$CLAUDE_CONFIG_DIR/projects" -name "*.jsonl" > transcripts.txt'
)


def logged_in_home(home: Path) -> None:
    """A HOME as ``claude login`` leaves it (an OAuth token that does not expire soon)."""
    (home / ".claude").mkdir(parents=True)
    token = {
        "claudeAiOauth": {
            "accessToken": "sk-ant-oat01-offline-test-token",
            "refreshToken": "sk-ant-ort01-offline-test-refresh",
            "expiresAt": 4_102_444_800_000,
            "scopes": ["user:inference", "user:profile"],
            "subscriptionType": "max",
        }
    }
    credentials = home / ".claude" / ".credentials.json"
    credentials.write_text(json.dumps(token))
    credentials.chmod(0o600)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))


async def run_isolated_instances(
    tmp_path: Path, home: Path, names: tuple[str, ...]
) -> tuple[list[InstanceState], list[str]]:
    script = {
        "default": {
            "responses": [
                {"tool_uses": [{"name": "Bash", "input": {"command": PROBE}}]},
                {"text": "Probed."},
            ]
        }
    }
    config = {
        "orchestration": {"isolate_config_dir": True},
        "instances": [
            {"name": n, "command": "probe", "allowed_tools": ["Bash"], "workspace": f"ws-{n}"}
            for n in names
        ],
    }
    plan = offline_plan(tmp_path, config, "isolate")
    no_key = {
        k: v
        for k, v in base_env().items()
        if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
    }
    async with ModelServer(script) as server:

        def env(inst: PlannedInstance) -> dict[str, str]:
            return {"ANTHROPIC_BASE_URL": server.url, "HOME": str(home)}

        orch = Orchestrator(plan, base_env=no_key, limits=Limits(), instance_env=env)
        outcome = await orch.run()
        keys = [s.key for s in server.served]
    return outcome.states, keys


def test_each_instance_has_its_own_config_dir_and_still_authenticates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    logged_in_home(home)
    states, _ = asyncio.run(run_isolated_instances(tmp_path, home, ("one", "two")))
    dirs = set()
    for state in states:
        assert state.status is Status.COMPLETED, (state.name, state.error, state.stderr_tail)
        ws = state.plan.workspace
        config_dir = Path((ws / "where.txt").read_text().strip())
        dirs.add(config_dir)
        assert config_dir != home / ".claude" and not config_dir.is_relative_to(home)
        assert not config_dir.exists()  # removed at the end
        assert (ws / "modes.txt").read_text().split() == [
            "700",
            str(config_dir),
            "600",
            str(config_dir / ".credentials.json"),
        ]
        transcripts = (ws / "transcripts.txt").read_text().split()
        assert [Path(t).name for t in transcripts] == [f"{state.plan.session_id}.jsonl"]
        assert all(Path(t).is_relative_to(config_dir) for t in transcripts)
    assert len(dirs) == 2  # one each
    # Nothing went to the user's own dir.
    assert not (home / ".claude" / "projects").exists()


def test_without_a_login_to_copy_it_does_not_authenticate(tmp_path: Path) -> None:
    """The control: the same run with a HOME that has no login fails, so the run above
    authenticated with the copied credentials (there is no API key in either)."""
    home = tmp_path / "home"
    home.mkdir()
    (state,), served = asyncio.run(run_isolated_instances(tmp_path, home, ("one",)))
    assert state.status is Status.FAILED
    assert served == []  # claude never reached the model


def test_config_dir_copies_the_login_private_and_links_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    logged_in_home(home)
    (home / ".claude" / "commands").mkdir()
    made = create_config_dir({"HOME": str(home)}, "a/b")
    try:
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
        for name in (".credentials.json", ".claude.json"):
            assert stat.S_IMODE((made / name).stat().st_mode) == 0o600
        assert (made / ".credentials.json").read_bytes() == (
            home / ".claude" / ".credentials.json"
        ).read_bytes()
        assert (made / "commands").resolve() == (home / ".claude" / "commands").resolve()
    finally:
        remove_config_dir(made)
    assert not made.exists()
    # CLAUDE_CONFIG_DIR of the user's own: both files come from there.
    own = tmp_path / "own"
    own.mkdir()
    (own / ".claude.json").write_text("{}")
    (own / ".credentials.json").write_text("{}")
    made = create_config_dir({"HOME": str(home), "CLAUDE_CONFIG_DIR": str(own)}, "x")
    try:
        assert (made / ".claude.json").read_text() == "{}"
        assert (made / ".credentials.json").read_text() == "{}"
    finally:
        remove_config_dir(made)
