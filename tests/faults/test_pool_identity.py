"""Every instance knows who it is: its environment carries CLAUDE_INSTANCE, SCENARIO_ID,
ORCHESTRATION_ID and PROJECT_ROOT (the config's env wins), read by a real Bash tool call of
the real pinned claude; dry-run shows them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.engine.state import Status
from tests.e2e.harness import offline_plan, run_offline

ECHO = 'echo "$CLAUDE_INSTANCE|$SCENARIO_ID|$ORCHESTRATION_ID|$PROJECT_ROOT" > ids.txt'


def _echoing(name: str) -> dict[str, Any]:
    return {
        "responses": [
            {"tool_uses": [{"name": "Bash", "input": {"command": ECHO}}]},
            {"text": "done"},
        ]
    }


CONFIG: dict[str, Any] = {
    "instances": [
        {
            "name": "alpha",
            "command": "say who you are",
            "workspace": "ws-alpha",
            "allowed_tools": ["Bash"],
            "scenario": {"difficulty": "medium"},
        },
        {
            "name": "beta",
            "command": "say who you are",
            "workspace": "ws-beta",
            "allowed_tools": ["Bash"],
            "env": {"CLAUDE_INSTANCE": "renamed"},
        },
    ]
}


@pytest.mark.claude
async def test_a_bash_tool_of_real_claude_sees_its_identity(tmp_path: Path) -> None:
    plan = offline_plan(tmp_path, CONFIG, "orch-identity-1")
    script = {"conversations": {n: _echoing(n) for n in ("alpha", "beta")}}
    _orch, outcome, _server = await run_offline(plan, script, tmp_path / "home", guardian=False)
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
    alpha = (tmp_path / "ws-alpha" / "ids.txt").read_text().strip()
    beta = (tmp_path / "ws-beta" / "ids.txt").read_text().strip()
    assert alpha == f"alpha|medium|orch-identity-1|{(tmp_path / 'ws-alpha').resolve()}"
    # no scenario: SCENARIO_ID is the name; the config's env overrides CLAUDE_INSTANCE
    assert beta == f"renamed|beta|orch-identity-1|{(tmp_path / 'ws-beta').resolve()}"


def test_dry_run_shows_the_identity_text_and_json(tmp_path: Path) -> None:
    (tmp_path / "ws-alpha").mkdir()
    (tmp_path / "ws-beta").mkdir()
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps({"orchestration": {"id": "orch-identity-2", "workspace": "."}, **CONFIG})
    )
    argv = [sys.executable, "-m", "coordinator.cli", "run", "--dry-run", "--config", str(config)]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    ws = (tmp_path / "ws-alpha").resolve()
    assert (
        f"identity   CLAUDE_INSTANCE=alpha SCENARIO_ID=medium ORCHESTRATION_ID=orch-identity-2 "
        f"PROJECT_ROOT={ws}" in text
    )
    out = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60, check=True)
    rows = {i["name"]: i for i in json.loads(out.stdout)["instances"]}
    assert rows["alpha"]["identity_env"] == {
        "CLAUDE_INSTANCE": "alpha",
        "SCENARIO_ID": "medium",
        "ORCHESTRATION_ID": "orch-identity-2",
        "PROJECT_ROOT": str(ws),
    }
    # overridden by the config's env: shown there (masked, as every config env value)
    assert "CLAUDE_INSTANCE" not in rows["beta"]["identity_env"]
    assert rows["beta"]["env"] == {"CLAUDE_INSTANCE": "***"}
