"""The pure rules of control commands: what each verb does in each status, names, targets."""

from __future__ import annotations

import pytest

from coordinator.control.commands import (
    FINISHED,
    Action,
    ControlError,
    Known,
    Verb,
    check_names,
    choose_target,
    decide,
    outcome_lines,
    whole_run,
)
from coordinator.engine.state import FINISHED as ENGINE_FINISHED
from coordinator.engine.state import Status
from coordinator.errors import UsageError


def test_finished_statuses_agree_with_the_engine() -> None:
    assert {s.value for s in ENGINE_FINISHED} == FINISHED
    assert not Status.PAUSED.finished


@pytest.mark.parametrize(
    ("verb", "status", "action", "text"),
    [
        (Verb.STOP, "running", Action.STOP, "cancelled"),
        (Verb.STOP, "waiting", Action.STOP, "cancelled"),
        (Verb.STOP, "paused", Action.STOP, "cancelled"),
        (Verb.STOP, "pending", Action.STOP, "cancelled (never launched)"),
        (Verb.STOP, "completed", Action.NONE, "already completed"),
        (Verb.PAUSE, "running", Action.PAUSE, "paused"),
        (Verb.PAUSE, "starting", Action.PAUSE, "paused"),
        (Verb.PAUSE, "waiting", Action.PAUSE, "paused"),
        (Verb.PAUSE, "pending", Action.PAUSE, "paused (not launched until unpaused)"),
        (Verb.PAUSE, "paused", Action.NONE, "already paused"),
        (Verb.PAUSE, "failed", Action.NONE, "already failed"),
        (Verb.UNPAUSE, "paused", Action.UNPAUSE, "unpaused"),
        (Verb.UNPAUSE, "running", Action.NONE, "not paused (running)"),
        (Verb.UNPAUSE, "timeout", Action.NONE, "already timeout"),
    ],
)
def test_what_each_verb_does_in_each_status(
    verb: Verb, status: str, action: Action, text: str
) -> None:
    decision = decide(verb, status)
    assert (decision.action, decision.text) == (action, text)


def test_whole_run_is_nobody_or_everybody() -> None:
    assert whole_run([], ["a", "b"])
    assert whole_run(["b", "a"], ["a", "b"])
    assert not whole_run(["a"], ["a", "b"])


def test_an_unknown_name_is_named() -> None:
    check_names("o1", ["a"], ["a", "b"])
    with pytest.raises(ControlError, match=r"o1: no instance named 'zed' \(instances: a, b\)"):
        check_names("o1", ["a", "zed"], ["a", "b"])


def test_outcome_lines() -> None:
    assert outcome_lines({"w-1": "paused", "w-2": "already completed"}) == [
        "w-1: paused",
        "w-2: already completed",
    ]


RUNNING = Known(first_is_orchestration=False, newest_running="o2", newest_names=("a", "b"))


def test_target_default_is_the_newest_running() -> None:
    assert choose_target([], RUNNING) == choose_target([], RUNNING)
    target = choose_target([], RUNNING)
    assert (target.orchestration_id, target.names) == ("o2", ())


def test_target_explicit_id_then_names() -> None:
    known = Known(first_is_orchestration=True, newest_running="o2", newest_names=("a", "b"))
    target = choose_target(["o1", "x"], known)
    assert (target.orchestration_id, target.names) == ("o1", ("x",))


def test_target_first_argument_an_instance_of_the_newest_running() -> None:
    target = choose_target(["b", "a"], RUNNING)
    assert (target.orchestration_id, target.names) == ("o2", ("b", "a"))


def test_target_ambiguous_first_argument_is_refused() -> None:
    known = Known(first_is_orchestration=True, newest_running="o2", newest_names=("o1", "b"))
    with pytest.raises(UsageError, match="both an orchestration id and an instance of o2"):
        choose_target(["o1"], known)


def test_target_neither_id_nor_instance() -> None:
    with pytest.raises(ControlError, match="'zed' is neither an orchestration id nor an instance"):
        choose_target(["zed"], RUNNING)
    nothing = Known(first_is_orchestration=False, newest_running=None)
    with pytest.raises(ControlError, match="no orchestration is running"):
        choose_target([], nothing)
    with pytest.raises(ControlError, match="'zed' is not an orchestration id"):
        choose_target(["zed"], nothing)


def test_paused_time_counts_once_when_it_overlaps_a_barrier_wait() -> None:
    from collections import deque

    from coordinator.engine.state import InstanceState
    from runner.accounting import Accountant
    from runner.progress import MilestoneTracker, ProgressTracker

    state = InstanceState(
        plan=None,  # type: ignore[arg-type]  # not read by the time arithmetic
        accountant=Accountant(),
        progress=ProgressTracker(total_steps=1),
        milestones=MilestoneTracker((30,)),
        output_tail=deque(),
        stderr_tail=deque(),
    )
    assert state.pausing_s(100.0) == 0.0
    state.paused_since = 5.0  # paused before it started: nothing to give back
    assert state.pausing_s(20.0) == 0.0
    state.started_mono = 10.0
    assert state.pausing_s(20.0) == 10.0  # from its start on
    state.paused_since = None
    state.waiting_since = 11.0  # at a barrier from 11 to 16, paused at 12
    state.paused_since, state.paused_wait_mark = 12.0, state.waiting_s(12.0)
    assert state.pausing_s(14.0) == 0.0  # so far all of it was waiting too
    state.wait_s, state.waiting_since = 5.0, None  # the release at 16
    assert state.pausing_s(20.0) == 4.0  # 8 s paused, 4 of them counted as waiting
    state.ended_mono = 18.0
    assert state.pausing_s(99.0) == 2.0  # it ended at 18: the clock stops there
