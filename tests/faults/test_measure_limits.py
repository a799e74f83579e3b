"""An instance's tool that eats memory, or an instance that overruns its time budget: real
claude instances against the scripted model server, real tools, the real engine. Blocked
(memory) or stopped (time budget) with the figures; nothing they started survives."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import Status
from coordinator.offline.server import ModelServer
from tests.e2e.harness import base_env, offline_env, offline_plan

pytestmark = pytest.mark.claude

HOG_MB = 1500  # on top of claude's own ~180 MB
LIMIT_MB = 1200


def response(n: int, text: str, tool: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text, "usage": {"input_tokens": 50 + n, "output_tokens": 20}}
    if tool is not None:
        out["tool_uses"] = [tool]
    return out


def bash(command: str) -> dict[str, Any]:
    return {"name": "Bash", "input": {"command": command, "description": "work", "timeout": 120000}}


def processes_with(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(token in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


async def run(tmp_path: Path, config: dict[str, Any], script: dict[str, Any]) -> RunOutcome:
    plan = offline_plan(tmp_path, config, "limits")
    async with ModelServer(script) as server:
        orch = Orchestrator(
            plan,
            base_env=base_env(),
            limits=Limits(timeout=120),
            instance_env=offline_env(server, tmp_path / "home"),
        )
        return await orch.run()


async def test_a_tool_over_the_memory_limit_blocks_its_instance_with_the_figures(
    tmp_path: Path,
) -> None:
    token = "hog-" + secrets.token_hex(6)
    hog = (
        f"{sys.executable} -c \"import time; b = b'x' * ({HOG_MB} << 20); time.sleep(90)\" {token}"
    )
    script = {
        "conversations": {
            "hog": {"responses": [response(0, "allocating", bash(hog)), response(1, "done")]},
            "calm": {"responses": [response(0, "a little", bash("sleep 2")), response(1, "done")]},
        }
    }
    config = {
        "orchestration": {"budget": {"mode": "block"}, "memory_limit_mb": LIMIT_MB},
        "instances": [
            {"name": "hog", "command": "allocate", "workspace": "hog", "allowed_tools": ["Bash"]},
            {"name": "calm", "command": "rest", "workspace": "calm", "allowed_tools": ["Bash"]},
        ],
    }
    outcome = await run(tmp_path, config, script)
    states = {s.name: s for s in outcome.states}
    hog_state, calm = states["hog"], states["calm"]
    assert hog_state.status is Status.BLOCKED, (hog_state.reason, hog_state.error)
    reason = hog_state.reason or ""
    assert reason.startswith("blocked: memory ") and "over the limit of 1,200 MB" in reason
    memory = hog_state.measures()["memory"]
    assert memory["limit_mb"] == LIMIT_MB and memory["peak_mb"] > LIMIT_MB
    shown_mb = int(reason.split("memory ")[1].split(" MB")[0].replace(",", ""))
    assert shown_mb > LIMIT_MB  # the figure in the reason is the sample that crossed
    assert memory["exceeded_at_s"] is not None and memory["exceeded_at_s"] < 60
    assert any(p[3] > LIMIT_MB for p in hog_state.measures()["series"])
    assert sum("hog: blocked: memory" in note for note in outcome.notes) == 1  # said once
    # the other instance stayed under the same limit and completed
    assert calm.status is Status.COMPLETED, (calm.reason, calm.error)
    calm_memory = calm.measures()["memory"]
    assert calm_memory["peak_mb"] is not None and calm_memory["peak_mb"] < LIMIT_MB
    assert calm_memory["exceeded_at_s"] is None
    assert processes_with(token) == []  # the hog went with its instance


async def test_an_enforced_time_budget_stops_the_instance_like_a_timeout(tmp_path: Path) -> None:
    token = "nap-" + secrets.token_hex(6)
    nap = f"{sys.executable} -c 'import time; time.sleep(60)' {token}"
    short = f"{sys.executable} -c 'import time; time.sleep(3)'"
    script = {
        "conversations": {
            "strict": {"responses": [response(0, "napping", bash(nap)), response(1, "done")]},
            "lenient": {"responses": [response(0, "napping", bash(short)), response(1, "done")]},
        }
    }
    config = {
        "orchestration": {"enforce_time_budget": True},
        "instances": [
            {
                "name": "strict",
                "command": "nap",
                "workspace": "strict",
                "allowed_tools": ["Bash"],
                "scenario": {"time_budget_seconds": 2},
            },
            {
                "name": "lenient",
                "command": "nap",
                "workspace": "lenient",
                "allowed_tools": ["Bash"],
                "scenario": {"time_budget_seconds": 1, "enforce_time_budget": False},
            },
        ],
    }
    outcome = await run(tmp_path, config, script)
    states = {s.name: s for s in outcome.states}
    strict, lenient = states["strict"], states["lenient"]
    assert strict.status is Status.TIMEOUT
    assert strict.reason == "timed out: time budget 2s exceeded (scenario.time_budget_seconds)"
    budget = strict.measures()["time_budget"]
    assert budget["seconds"] == 2 and budget["enforced"] is True
    assert 2.0 <= budget["exceeded_at_s"] < 5.0
    assert strict.duration_s() < 15  # stopped, not left to its 60 s nap
    assert strict.attempts == 1  # a time budget is not a transient failure: no retry
    assert processes_with(token) == []
    # not enforced: crossing it is recorded and said, the instance goes on to complete
    assert lenient.status is Status.COMPLETED, (lenient.reason, lenient.error)
    budget = lenient.measures()["time_budget"]
    assert budget["enforced"] is False and 1.0 <= budget["exceeded_at_s"] < 4.0
    assert "time budget 1s exceeded (scenario.time_budget_seconds)" in lenient.budget_notes
