"""Build a model-server script from a plan, so ``--offline`` needs no script file.

Each instance gets its own conversation: work proportional to its scenario's
``complexity_multiplier`` (1x simple, 3x medium, 8x complex), real tool calls in its
workspace (Write, then Bash running what was written), ``PROGRESS: NN%`` markers, and
token usage that grows with the conversation the way a real one does (input, cache
creation on the first call, cache reads after). Deterministic: same plan, same script.

An instance with a verify command gets a small project instead (:func:`project_conversation`):
real modules and their pytest tests, run through Bash the way its verify runs them, so the
JUnit file its verify writes is real and the tiers really differ: ``simple`` passes every
test; ``medium`` leaves two of its tests failing; ``complex`` finds a failing test on its
first run, fixes the module in a later tool call and runs again (every test passes, at the
price of more turns and tokens), then writes a short report.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from coordinator.plan import PlannedInstance, RunPlan

RESPONSE_DELAY_S = 0.25  # per API response: long enough to watch the live table move


def conversation_for(inst: PlannedInstance) -> dict[str, Any]:
    if inst.measure.verify is not None:
        return project_conversation(inst)
    multiplier = inst.scenario.complexity_multiplier if inst.scenario else 1.0
    rounds = max(1, round(2 * multiplier))  # tool rounds per turn
    responses: list[dict[str, Any]] = []
    total = rounds * len(inst.turns)
    done = 0
    for turn in range(len(inst.turns)):
        for r in range(rounds):
            done += 1
            pct = int(100 * done / (total + 1))
            name = f"part_{turn + 1}_{r + 1}.py"
            path = inst.workspace / name
            n = len(responses)
            if r % 2 == 0:
                tool = {
                    "name": "Write",
                    "input": {
                        "file_path": str(path),
                        "content": f"def part():\n    return {n}\n\nprint(part())\n",
                    },
                }
            else:
                prev = inst.workspace / f"part_{turn + 1}_{r}.py"
                tool = {
                    "name": "Bash",
                    "input": {"command": f"python3 {prev.name}", "description": "run it"},
                }
            responses.append(
                {
                    "text": f"Working on {name}.\nPROGRESS: {pct}%",
                    "tool_uses": [tool],
                    "usage": _usage(n),
                    "delay_s": RESPONSE_DELAY_S,
                }
            )
        responses.append(
            {
                "text": f"Turn {turn + 1} of {len(inst.turns)} done.\nPROGRESS: 100%",
                "usage": _usage(len(responses)),
                "delay_s": RESPONSE_DELAY_S,
            }
        )
    return {"responses": responses}


def project_conversation(inst: PlannedInstance) -> dict[str, Any]:
    """Modules with tests, run, (for some tiers) fixed: see the module docstring."""
    scenario = inst.scenario
    multiplier = scenario.complexity_multiplier if scenario else 1.0
    tier = _tier(scenario.difficulty if scenario else "simple", multiplier)
    modules = max(1, round(multiplier))
    ws = inst.workspace
    steps: list[tuple[str, dict[str, Any]]] = [
        ("Setting up pytest for the project.", _write(ws / "pytest.ini", "[pytest]\n"))
    ]
    buggy = (
        {0} if tier == "complex" else ({modules - 1, modules - 2} if tier == "medium" else set())
    )
    for k in range(modules):
        steps.append((f"Writing mod_{k}.py.", _write(ws / f"mod_{k}.py", _module(k, k in buggy))))
        steps.append(
            (f"Writing its tests, test_mod_{k}.py.", _write(ws / f"test_mod_{k}.py", _tests(k)))
        )
    run_tests = _run_tests_command(inst)
    steps.append(("Running the tests.", _bash(run_tests, "run the tests")))
    if tier == "complex":
        steps.append(
            ("test_mod_0 fails: fixing mod_0.py.", _write(ws / "mod_0.py", _module(0, False)))
        )
        steps.append(("Running the tests again.", _bash(run_tests, "run the tests again")))
        steps.append(("Writing the report.", _write(ws / "REPORT.md", _report(modules))))
    responses: list[dict[str, Any]] = []
    for n, (text, tool) in enumerate(steps):
        pct = int(100 * (n + 1) / (len(steps) + 1))
        responses.append(
            {
                "text": f"{text}\nPROGRESS: {pct}%",
                "tool_uses": [tool],
                "usage": _usage(n),
                "delay_s": RESPONSE_DELAY_S,
            }
        )
    for turn in range(len(inst.turns)):  # the work is in the first; later turns report
        responses.append(
            {
                "text": f"Turn {turn + 1} of {len(inst.turns)} done.\nPROGRESS: 100%",
                "usage": _usage(len(responses)),
                "delay_s": RESPONSE_DELAY_S,
            }
        )
    return {"responses": responses}


def _tier(difficulty: str, multiplier: float) -> str:
    if difficulty in ("simple", "medium", "complex"):
        return difficulty
    return "complex" if multiplier >= 8 else "medium" if multiplier >= 2 else "simple"


def _module(k: int, buggy: bool) -> str:
    factor = k + 1
    body = f"x * {factor} if x < 2 else x * {factor} + 1" if buggy else f"x * {factor}"
    return f'def scale_{k}(x):\n    """x times {factor}."""\n    return {body}\n'


def _tests(k: int) -> str:
    factor = k + 1
    return (
        f"from mod_{k} import scale_{k}\n\n\n"
        f"def test_scale_{k}_zero():\n    assert scale_{k}(0) == 0\n\n\n"
        f"def test_scale_{k}_one():\n    assert scale_{k}(1) == {factor}\n\n\n"
        f"def test_scale_{k}_many():\n    assert scale_{k}(3) == {3 * factor}\n"
    )


def _report(modules: int) -> str:
    return (
        f"# Report\n\n{modules} modules, {3 * modules} tests. The first run found a failing "
        "test in mod_0 (scale_0 was off by one for x >= 2); fixed, every test passes.\n"
    )


def _run_tests_command(inst: PlannedInstance) -> str:
    """The instance's verify command as a Bash line, without its JUnit output (the verify
    after the instance writes that), with the verify's environment."""
    verify = inst.measure.verify
    assert verify is not None
    argv = [a for a in verify.argv if not a.startswith("--junitxml") and a != "--junit-xml"]
    env = [f"{k}={shlex.quote(v)}" for k, v in verify.env.items()]
    return " ".join([*env, shlex.join(argv)])


def _write(path: Path, content: str) -> dict[str, Any]:
    return {"name": "Write", "input": {"file_path": str(path), "content": content}}


def _bash(command: str, description: str) -> dict[str, Any]:
    return {"name": "Bash", "input": {"command": command, "description": description}}


def _usage(n: int) -> dict[str, int]:
    return {
        "input_tokens": 40 + 15 * n,
        "output_tokens": 120 + 10 * n,
        "cache_creation_input_tokens": 2500 if n == 0 else 300,
        "cache_read_input_tokens": 0 if n == 0 else 2500 + 400 * n,
    }


def script_for_plan(plan: RunPlan) -> dict[str, Any]:
    return {"conversations": {inst.name: conversation_for(inst) for inst in plan.instances}}
