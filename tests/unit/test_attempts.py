"""The pure rules of attempts: what a relaunch sends, which failures earn one, backoff, and
the accountant carrying tokens and cost across processes."""

from __future__ import annotations

import random
from pathlib import Path

from coordinator.config import parse_config
from coordinator.control.attempts import (
    CONTINUE_PROMPT,
    Ending,
    RetryPolicy,
    first_launch,
    next_launch,
    transient_cause,
)
from coordinator.plan import PlannedInstance, RunOptions, build_plan
from runner.accounting import Accountant
from runner.events import Usage, parse_line
from tests.unit.streams import api_response, result, usage


def planned(tmp_path: Path, **inst: object) -> PlannedInstance:
    from datetime import UTC, datetime

    config = parse_config({"instances": [{"name": "w", "command": "do it", **inst}]})
    plan = build_plan(
        config,
        RunOptions(orchestration_id="o"),
        claude_bin="claude",
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )
    return plan.instances[0]


def test_a_relaunch_resumes_the_session_with_a_continue_turn(tmp_path: Path) -> None:
    inst = planned(tmp_path)
    assert first_launch(inst).argv == inst.argv and "--session-id" in inst.argv
    launch = next_launch(inst, turns_done=0, turn_started=True, session_exists=True, cost_spent=0.0)
    assert launch is not None and launch.resumed
    argv = list(launch.argv)
    assert argv[argv.index("--resume") + 1] == inst.session_id and "--session-id" not in argv
    assert argv[-1] == CONTINUE_PROMPT and launch.turns == (CONTINUE_PROMPT,)


def test_a_relaunch_of_a_session_claude_never_wrote_starts_it_again(tmp_path: Path) -> None:
    inst = planned(tmp_path)
    launch = next_launch(
        inst, turns_done=0, turn_started=True, session_exists=False, cost_spent=0.0
    )
    assert launch is not None and not launch.resumed
    assert "--session-id" in launch.argv and launch.argv[-1] == "do it"


def test_multi_turn_relaunch_continues_the_turn_it_was_in_then_the_rest(tmp_path: Path) -> None:
    inst = planned(tmp_path, steps=["two", "three"])
    launch = next_launch(inst, turns_done=1, turn_started=True, session_exists=True, cost_spent=0.0)
    assert launch is not None
    assert launch.turns == (CONTINUE_PROMPT, "three") and launch.first_turn == 1
    assert launch.streams_input and "--input-format" in launch.argv
    between = next_launch(
        inst, turns_done=2, turn_started=False, session_exists=True, cost_spent=0.0
    )
    assert between is not None and between.turns == ("three",) and between.first_turn == 2


def test_the_cost_cap_of_a_relaunch_is_what_is_left_of_it(tmp_path: Path) -> None:
    inst = planned(tmp_path, max_cost_usd=1.0)
    launch = next_launch(
        inst, turns_done=0, turn_started=True, session_exists=True, cost_spent=0.25
    )
    assert launch is not None
    assert launch.argv[list(launch.argv).index("--max-budget-usd") + 1] == "0.75"
    spent = next_launch(inst, turns_done=0, turn_started=True, session_exists=True, cost_spent=1)
    assert spent is None


def ending(**kw: object) -> Ending:
    fields: dict[str, object] = {
        "status": "failed",
        "stopped_by_coordinator": False,
        "exit_code": 1,
        "had_result": True,
        "result_is_error": True,
        "api_error_status": None,
        "error": "x",
    }
    fields.update(kw)
    return Ending(**fields)  # type: ignore[arg-type]


def test_which_failures_earn_another_attempt() -> None:
    assert transient_cause(ending(api_error_status=529)) == "API overloaded"
    assert transient_cause(ending(api_error_status=503)) == "API error 503"
    assert transient_cause(ending(had_result=False, exit_code=-9, error="killed by SIGKILL"))
    assert transient_cause(ending(had_result=False, exit_code=1, result_is_error=False))
    assert transient_cause(ending(status="timeout", idle_timeout=True, stopped_by_coordinator=True))
    # never: bad credentials or requests, permission refusals, config, budgets, cancels,
    # wall-clock timeouts, claude's own error ends (max turns), success
    for final in (
        ending(api_error_status=401),
        ending(api_error_status=400),
        ending(api_error_status=529, permission_denied=True),
        ending(spawn_failed=True, had_result=False),
        ending(status="blocked", stopped_by_coordinator=True),
        ending(status="cancelled", stopped_by_coordinator=True),
        ending(status="timeout", stopped_by_coordinator=True),
        ending(had_result=True, result_is_error=True),
        ending(status="completed", exit_code=0, result_is_error=False),
        ending(had_result=False, exit_code=-15, stopped_by_coordinator=True),
    ):
        assert transient_cause(final) is None, final


def test_backoff_doubles_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_s=10, backoff_cap_s=35)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in (2, 3, 4, 5)]
    assert 10 <= delays[0] <= 12 and 20 <= delays[1] <= 24
    assert delays[2] == delays[3] == 35
    assert policy.allows(4) and not policy.allows(5)


def feed(acct: Accountant, chunks: list[bytes | list[bytes]]) -> None:
    for chunk in chunks:
        for line in chunk if isinstance(chunk, list) else [chunk]:
            event = parse_line(line)
            assert event is not None
            acct.feed(event)


def test_the_accountant_carries_tokens_and_cost_across_processes() -> None:
    acct = Accountant()
    feed(acct, [api_response("m1", 100, 10), result(usage(100, 10), cost=0.5)])
    feed(acct, [api_response("m2", 7, 3)])  # streamed, then the process died
    first = acct.usage
    assert first == Usage(107, 13, 0, 0)
    acct.next_process()
    assert acct.usage == first and acct.process_results == 0 and acct.last_result is None
    cost_before = acct.cost_usd
    feed(acct, [api_response("m3", 50, 5), result(usage(50, 5), cost=0.25)])
    assert acct.usage == Usage(157, 18, 0, 0)
    assert acct.cost_usd == cost_before + 0.25  # the new process counts its cost from 0
    assert acct.process_results == 1 and acct.results == 2 and acct.ok_results == 2


def test_a_seeded_accountant_starts_from_what_earlier_attempts_spent() -> None:
    acct = Accountant()
    acct.seed(Usage(10, 2, 3, 4), 0.5, {"Bash": 2}, num_turns=3, ok_results=1, messages=4)
    assert acct.usage == Usage(10, 2, 3, 4) and acct.cost_usd == 0.5
    assert acct.tool_call_count == 2 and acct.messages == 4 and acct.process_results == 0
    feed(acct, [api_response("m1", 1, 1), result(usage(1, 1), cost=0.1)])
    assert acct.usage == Usage(11, 3, 3, 4) and acct.cost_usd == 0.6
