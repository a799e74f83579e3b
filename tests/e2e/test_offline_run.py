"""Acceptance: real claude instances, run by the real engine, against the scripted model
server. Token counts are compared with what the server served, exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import InstanceState, Status
from coordinator.offline.server import ModelServer, TokenUsage
from runner.events import Usage
from runner.pricing import estimate_cost
from tests.e2e.harness import base_env, offline_env, offline_plan

pytestmark = pytest.mark.claude


def as_usage(t: TokenUsage) -> Usage:
    return Usage(
        t.input_tokens, t.output_tokens, t.cache_read_input_tokens, t.cache_creation_input_tokens
    )


def respond(n: int, *, tool: dict[str, Any] | None = None, text: str = "ok") -> dict[str, Any]:
    out: dict[str, Any] = {
        "text": text,
        "usage": {
            "input_tokens": 100 + n,
            "output_tokens": 50 + 7 * n,
            "cache_creation_input_tokens": 300 if n == 0 else 11,
            "cache_read_input_tokens": 0 if n == 0 else 1000 * n,
        },
    }
    if tool:
        out["tool_uses"] = [tool]
    return out


class Recording(Orchestrator):
    """Records the live totals every time they change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.snapshots: dict[str, list[tuple[int, Usage]]] = {}

    def on_tokens(self, state: InstanceState) -> None:
        acct = state.accountant
        if acct.results == 0:
            self.snapshots.setdefault(state.name, []).append((acct.messages, acct.usage))
        super().on_tokens(state)


async def run(
    tmp_path: Path, config: dict[str, Any], script: dict[str, Any]
) -> tuple[Recording, RunOutcome, ModelServer]:
    plan = offline_plan(tmp_path, config, "e2e")
    async with ModelServer(script) as server:
        env = offline_env(server, tmp_path / "home")
        orch = Recording(plan, base_env=base_env(), limits=Limits(timeout=120), instance_env=env)
        outcome = await orch.run()
    return orch, outcome, server


def served_prefixes(server: ModelServer, key: str) -> Iterator[Usage]:
    total = Usage()
    for s in server.served:
        if s.key == key and s.complete:
            total = total + as_usage(s.usage)
            yield total


async def test_three_instances_exact_tokens_live_and_final(tmp_path: Path) -> None:
    names = {"alpha": 2, "beta": 4, "gamma": 6}  # tool rounds per instance
    script: dict[str, Any] = {"conversations": {}}
    instances = []
    for name, rounds in names.items():
        responses = [
            respond(i, tool={"name": "Bash", "input": {"command": f"echo {name}-{i} >> log.txt"}})
            for i in range(rounds)
        ]
        responses.append(respond(rounds, text="done PROGRESS: 100%"))
        script["conversations"][name] = {"responses": responses}
        instances.append(
            {
                "name": name,
                "command": f"work on {name}",
                "workspace": name,
                "allowed_tools": ["Bash"],
            }
        )
    orch, outcome, server = await run(tmp_path, {"instances": instances}, script)
    for state in outcome.states:
        acct = state.accountant
        assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
        prefixes = list(served_prefixes(server, state.name))
        assert len(prefixes) == names[state.name] + 1
        served = prefixes[-1]
        assert acct.usage == served  # exactly what the server served
        assert acct.last_result is not None and acct.last_result.usage == served
        assert acct.streamed_usage == served  # live sums agreed before reconciliation
        assert acct.tool_calls == {"Bash": names[state.name]}
        # the live price table agrees with the CLI's own cost for its default model, so
        # the live cost does not jump when the result replaces it
        model = next(r.model for r in server.requests if r.key == state.name)
        assert acct.last_result.total_cost_usd == pytest.approx(estimate_cost(model, served))
        log = (tmp_path / state.name / "log.txt").read_text().split()
        assert log == [f"{state.name}-{i}" for i in range(names[state.name])]  # tools ran
        # live: after each completed message the totals equal the served prefix, and
        # they never run ahead of it
        snaps = orch.snapshots[state.name]
        for k, prefix in enumerate(prefixes, start=1):
            assert (k, prefix) in snaps, f"{state.name}: message {k} never exact live"
        for k, usage in snaps:
            assert usage.total <= prefixes[k - 1].total


async def test_budget_block_stops_after_the_crossing_turn(tmp_path: Path) -> None:
    # each response costs 100 + 1 + 50.. tokens; turn 3 pushes the total past 900
    def responses() -> list[dict[str, Any]]:
        out = [respond(0, tool={"name": "Bash", "input": {"command": "echo 1"}})]
        out[0]["usage"] = {"input_tokens": 250, "output_tokens": 50}
        for i in range(1, 5):
            # the tool of the crossing turn takes a while, as real tools do: the stop must
            # land before claude's next request, not race a 10 ms echo on a loaded machine
            command = f"sleep 3; echo {i}" if i == 2 else f"echo {i}"
            out.append(
                {
                    "tool_uses": [{"name": "Bash", "input": {"command": command}}],
                    "text": "more",
                    "usage": {"input_tokens": 250, "output_tokens": 50},
                }
            )
        out.append({"text": "done", "usage": {"input_tokens": 250, "output_tokens": 50}})
        return out

    script = {
        "conversations": {"capped": {"responses": responses()}, "free": {"responses": responses()}}
    }
    config = {
        "orchestration": {"budget": {"mode": "block"}},
        "instances": [
            {
                "name": "capped",
                "command": "go",
                "workspace": "capped",
                "allowed_tools": ["Bash"],
                "max_tokens_per_command": 800,
            },
            {"name": "free", "command": "go", "workspace": "free", "allowed_tools": ["Bash"]},
        ],
    }
    orch, outcome, server = await run(tmp_path, config, script)
    by = {s.name: s for s in outcome.states}
    capped = by["capped"]
    assert capped.status is Status.BLOCKED
    assert "instance capped token budget" in (capped.reason or "")
    assert server.message_count("capped") == 3  # turn 3 crossed 800: no turn 4, no turn 5
    assert capped.accountant.usage == list(served_prefixes(server, "capped"))[-1]
    assert by["free"].status is Status.COMPLETED
    assert server.message_count("free") == 6
    budget = next(b for b in outcome.budgets.budgets if b.target == "capped")
    assert budget.state == "exceeded" and budget.blocked == ["capped"]

    # the same run in warn mode completes every turn and records the warnings
    config["orchestration"] = {"budget": {"mode": "warn"}}
    orch, outcome, server = await run(tmp_path / "warn", config, script)
    by = {s.name: s for s in outcome.states}
    assert by["capped"].status is Status.COMPLETED
    assert server.message_count("capped") == 6
    assert any("exceeded" in n for n in orch.notes)
    assert any("reached 80%" in n for n in by["capped"].budget_notes)


async def test_steps_are_later_turns_of_one_session(tmp_path: Path) -> None:
    """pre_commands, command and steps go to one process as stream-json turns; each ends
    with its own result; tokens stay exact across turns (result usage is cumulative)."""
    responses = []
    for turn in range(3):
        responses.append(
            respond(
                2 * turn,
                tool={"name": "Bash", "input": {"command": f"echo turn{turn} >> turns.txt"}},
            )
        )
        responses.append(respond(2 * turn + 1, text=f"turn {turn} done"))
    script = {"conversations": {"multi": {"responses": responses}}}
    config = {
        "instances": [
            {
                "name": "multi",
                "command": "second",
                "pre_commands": ["first"],
                "steps": ["third"],
                "workspace": "multi",
                "allowed_tools": ["Bash"],
            }
        ]
    }
    _orch, outcome, server = await run(tmp_path, config, script)
    state = outcome.states[0]
    assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
    assert state.turns_sent == 3 and state.accountant.results == 3
    assert (tmp_path / "multi" / "turns.txt").read_text().split() == ["turn0", "turn1", "turn2"]
    served = list(served_prefixes(server, "multi"))[-1]
    assert state.accountant.usage == served
    assert state.progress.pct == 100.0
    prompts = [r for r in server.requests if r.key == "multi"]
    assert len({r.session_id for r in prompts}) == 1  # one session throughout
