"""What every e2e test needs to run real claude instances against the offline model server:
a plan with workspaces, the environment that points claude at the server."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.config import parse_config
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.offline.server import ModelServer
from coordinator.plan import PlannedInstance, RunOptions, RunPlan, build_plan


def offline_plan(tmp_path: Path, config: dict[str, Any], orchestration_id: str) -> RunPlan:
    """The plan of ``config`` (no stagger unless it says so), with its workspaces made."""
    orchestration = {"startup_delay": 0, **config.get("orchestration", {})}
    plan = build_plan(
        parse_config({**config, "orchestration": orchestration}),
        RunOptions(orchestration_id=orchestration_id),
        claude_bin=str(PROJECT_LOCAL),
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )
    for inst in plan.instances:
        inst.workspace.mkdir(parents=True, exist_ok=True)
    return plan


def offline_env(server: ModelServer, home: Path) -> Callable[[PlannedInstance], dict[str, str]]:
    """Per instance: the server's URL, a dummy key, a scratch HOME, and the header by which
    the server knows whose conversation a request belongs to."""
    home.mkdir(parents=True, exist_ok=True)

    def env(inst: PlannedInstance) -> dict[str, str]:
        return {
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "offline",
            "HOME": str(home),
            "ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {inst.name}",
        }

    return env


def base_env() -> dict[str, str]:
    """This process's environment without the user's claude config dir or CLI tuning."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "CLAUDE_CONFIG_DIR" and not k.startswith("CLAUDE_CODE_")
    }


async def run_offline(
    plan: RunPlan, script: dict[str, Any], home: Path, *, timeout: float = 120, **kw: Any
) -> tuple[Orchestrator, RunOutcome, ModelServer]:
    """``plan`` through real claude against an offline server playing ``script``; the
    orchestrator (``kw``: its other arguments), the outcome and the server, stopped."""
    async with ModelServer(script) as server:
        orch = Orchestrator(
            plan,
            base_env=base_env(),
            limits=Limits(timeout=timeout),
            instance_env=offline_env(server, home),
            **kw,
        )
        outcome = await orch.run()
    return orch, outcome, server
