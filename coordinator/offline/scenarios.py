"""Build a model-server script from a plan, so ``--offline`` needs no script file.

Each instance gets its own conversation: work proportional to its scenario's
``complexity_multiplier`` (1x simple, 3x medium, 8x complex), real tool calls in its
workspace (Write, then Bash running what was written), ``PROGRESS: NN%`` markers, and
token usage that grows with the conversation the way a real one does (input, cache
creation on the first call, cache reads after). Deterministic: same plan, same script.
"""

from __future__ import annotations

from typing import Any

from coordinator.plan import PlannedInstance, RunPlan

RESPONSE_DELAY_S = 0.25  # per API response: long enough to watch the live table move


def conversation_for(inst: PlannedInstance) -> dict[str, Any]:
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


def _usage(n: int) -> dict[str, int]:
    return {
        "input_tokens": 40 + 15 * n,
        "output_tokens": 120 + 10 * n,
        "cache_creation_input_tokens": 2500 if n == 0 else 300,
        "cache_read_input_tokens": 0 if n == 0 else 2500 + 400 * n,
    }


def script_for_plan(plan: RunPlan) -> dict[str, Any]:
    return {"conversations": {inst.name: conversation_for(inst) for inst in plan.instances}}
