"""The names an instance's environment carries so that hooks, tools and scripts inside it
know where they are (the names the seeds use). Pure."""

from __future__ import annotations

from pathlib import Path

from coordinator.config.models import ScenarioConfig

INSTANCE = "CLAUDE_INSTANCE"
SCENARIO = "SCENARIO_ID"
ORCHESTRATION = "ORCHESTRATION_ID"
PROJECT_ROOT = "PROJECT_ROOT"
NAMES = (INSTANCE, SCENARIO, ORCHESTRATION, PROJECT_ROOT)


def identity_env(
    name: str, scenario: ScenarioConfig | None, orchestration_id: str, workspace: Path
) -> dict[str, str]:
    """``CLAUDE_INSTANCE`` its name, ``SCENARIO_ID`` its scenario's difficulty (else its
    name), ``ORCHESTRATION_ID``, ``PROJECT_ROOT`` its workspace. A config's ``env`` that sets
    one of them wins (the child's environment applies it after these)."""
    return {
        INSTANCE: name,
        SCENARIO: scenario.difficulty if scenario is not None else name,
        ORCHESTRATION: orchestration_id,
        PROJECT_ROOT: str(workspace),
    }
