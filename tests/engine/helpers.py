from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from coordinator.config import parse_config
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.plan import PlannedInstance, RunOptions, build_plan

ROOT = Path(__file__).resolve().parents[2]
REPLAY = str(ROOT / "scripts" / "replay-claude")


def write_script(path: Path, steps: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(steps))
    return path


async def run_replay(
    tmp_path: Path,
    instances: list[dict[str, Any]],
    scripts: dict[str, list[dict[str, Any]]],
    *,
    orchestration: dict[str, Any] | None = None,
    limits: Limits | None = None,
    options: RunOptions | None = None,
    claude_bin: str = REPLAY,
) -> tuple[Orchestrator, RunOutcome]:
    config = parse_config(
        {
            "orchestration": {
                "startup_delay": 0,
                "progress_instructions": False,
                **(orchestration or {}),
            },
            "instances": instances,
        }
    )
    plan = build_plan(
        config,
        options or RunOptions(orchestration_id="t"),
        claude_bin=claude_bin,
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )
    paths = {
        name: write_script(tmp_path / f"{name}.script.json", steps)
        for name, steps in scripts.items()
    }

    def env(inst: PlannedInstance) -> dict[str, str]:
        return {"REPLAY_SCRIPT": str(paths[inst.name])}

    orch = Orchestrator(
        plan, base_env=dict(os.environ), limits=limits or Limits(), instance_env=env
    )
    return orch, await orch.run()


def sleeper(tag: str, seconds: int = 300) -> list[str]:
    """A process that sleeps and carries ``tag`` in its command line."""
    import sys

    return [sys.executable, "-c", f"import time; time.sleep({seconds})", tag]


def alive_cmdlines(marker: str) -> list[str]:
    """Every live process whose command line contains ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if marker in cmd:
            found.append(cmd)
    return found
