"""Attempts through the real claude CLI against the scripted model server: an instance whose
API call fails for good (after claude's own retries) is launched again by ``max_attempts``,
continues its own conversation (``--resume``) and completes; its tokens over both attempts
are exactly what the server served; failures a new attempt would only repeat are not
retried."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.control.attempts import CONTINUE_PROMPT
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import Status
from coordinator.offline.server import ModelServer
from tests.e2e.harness import base_env, offline_env, offline_plan, run_offline
from tests.e2e.test_offline_run import respond, served_prefixes
from tests.engine.helpers import alive_cmdlines

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]

GIVE_UP_529 = {"error": {"status": 529, "should_retry": False}}


def instance(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "command": f"work on {name}",
        "workspace": name,
        "allowed_tools": ["Bash"],
        **extra,
    }


async def run(tmp_path: Path, instances: list[dict[str, Any]], script: dict[str, Any]) -> Any:
    config = {
        "orchestration": {"retry_backoff_s": 0.2},
        "instances": instances,
    }
    plan = offline_plan(tmp_path, config, "attempts")
    _orch, outcome, server = await run_offline(plan, script, tmp_path / "home", timeout=60)
    for state in outcome.states:
        assert alive_cmdlines(state.plan.session_id) == [], state.name
    return outcome, server


async def test_a_failed_attempt_is_relaunched_continues_its_session_and_completes(
    tmp_path: Path,
) -> None:
    script = {
        "conversations": {
            "flaky": {
                "responses": [
                    respond(0, tool={"name": "Bash", "input": {"command": "echo one > a.txt"}}),
                    GIVE_UP_529,  # claude gives up at once: the attempt fails
                    respond(1, text="finished PROGRESS: 100%"),
                ]
            }
        }
    }
    outcome, server = await run(tmp_path, [instance("flaky", max_attempts=2)], script)
    (state,) = outcome.states
    assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
    assert state.attempts == 2
    first, second = state.attempt_log
    assert first.status == "failed" and first.error is not None and "529" in first.error
    assert first.then is not None and first.then.startswith("attempt 2/2 in ")
    assert "API overloaded" in first.then
    assert second.status == "completed" and second.resumed and not first.resumed
    # the server saw the conversation continue: the same session, and the relaunch sent the
    # earlier messages again (prompt, tool call, tool result) with the continue turn (the
    # pinned CLI puts it in the user message that holds the unanswered tool result)
    requests = [r for r in server.requests if r.key == "flaky" and not r.auxiliary]
    assert len(requests) == 3
    assert {r.session_id for r in requests} == {state.plan.session_id}
    assert requests[2].message_count >= requests[1].message_count >= 3
    assert requests[2].tool_result_ids == requests[1].tool_result_ids != ()
    assert CONTINUE_PROMPT in requests[2].last_user_text
    assert CONTINUE_PROMPT not in requests[1].last_user_text
    # tokens, cost and tools carried over: exactly what the server served, both attempts
    assert state.accountant.usage == list(served_prefixes(server, "flaky"))[-1]
    assert state.accountant.tool_calls == {"Bash": 1}
    assert (tmp_path / "flaky" / "a.txt").read_text() == "one\n"
    assert outcome.exit_code == 0


async def test_failures_a_new_attempt_would_repeat_are_not_retried(tmp_path: Path) -> None:
    script = {
        "conversations": {
            "badkey": {"responses": [], "after": {"error": {"status": 401, "should_retry": False}}},
            "busy": {"responses": [], "after": GIVE_UP_529},
        }
    }
    outcome, server = await run(
        tmp_path,
        [instance("badkey", max_attempts=3), instance("busy", max_attempts=2)],
        script,
    )
    by = {s.name: s for s in outcome.states}
    assert by["badkey"].status is Status.FAILED and by["badkey"].attempts == 1
    assert server.served_count("badkey") == 1
    # a 529 is retried, up to max_attempts launches in all, then the instance fails
    busy = by["busy"]
    assert busy.status is Status.FAILED and busy.attempts == 2
    assert [a.status for a in busy.attempt_log] == ["failed", "failed"]
    assert busy.attempt_log[-1].then is None
    assert server.served_count("busy") == 2


async def test_a_named_session_is_continued_by_a_later_run_with_resume(tmp_path: Path) -> None:
    """``session_id: "notes"`` maps to the same UUID in every run of the config: a second
    run with ``resume: true`` continues the first run's conversation; one without it is
    refused by claude ("already in use"), which the instance's error says plainly."""
    script = {
        "conversations": {
            "notes": {"responses": [respond(0, text="first run"), respond(1, text="second run")]}
        }
    }
    base = instance("notes", session_id="notes")

    async def one_run(orch_id: str, inst: dict[str, Any], server: ModelServer) -> Any:
        plan = offline_plan(tmp_path, {"instances": [inst]}, orch_id)
        orch = Orchestrator(
            plan,
            base_env=base_env(),
            limits=Limits(timeout=60),
            instance_env=offline_env(server, tmp_path / "home"),
        )
        return (await orch.run()).states[0]

    async with ModelServer(script) as server:
        first = await one_run("run-1", base, server)
        again = await one_run("run-2", base, server)
        resumed = await one_run("run-3", {**base, "resume": True}, server)
    assert first.status is Status.COMPLETED
    assert first.plan.session_id == again.plan.session_id == resumed.plan.session_id
    assert again.status is Status.FAILED and again.error is not None
    assert again.error.startswith(f"session {first.plan.session_id} is already in use")
    assert "resume: true" in again.error
    assert resumed.status is Status.COMPLETED, (resumed.error, list(resumed.stderr_tail))
    requests = [r for r in server.requests if r.key == "notes" and not r.auxiliary]
    assert len(requests) == 2  # the refused run never reached the API
    assert requests[1].message_count > requests[0].message_count  # run 1's turn sent again
