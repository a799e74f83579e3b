"""The fleet's pure decisions: queues per label set, payloads, claims, the fence."""

from __future__ import annotations

import dataclasses

import pytest

from coordinator.errors import UsageError
from coordinator.fleet.rules import (
    ClaimAction,
    JobPayload,
    Route,
    decide_claim,
    entrypoint_for,
    entrypoints_for_runner,
    fenced_out,
    hosted_entrypoint,
    kill_within,
    must_self_fence,
    not_before_s,
    parse_labels,
    route,
    serves,
)


def test_an_instance_queue_is_its_sorted_label_set() -> None:
    assert entrypoint_for([]) == "coordinator"
    assert entrypoint_for(["gpu", "arm", "gpu"]) == "coordinator:arm,gpu"


def test_a_runner_serves_every_subset_of_its_labels_and_nothing_more() -> None:
    eps = entrypoints_for_runner(["gpu", "arm"])
    assert sorted(eps) == sorted(
        ["coordinator", "coordinator:arm", "coordinator:gpu", "coordinator:arm,gpu"]
    )
    assert entrypoint_for(["gpu", "linux"]) not in eps
    assert entrypoints_for_runner([]) == ["coordinator"]
    with pytest.raises(UsageError, match="at most 8"):
        entrypoints_for_runner([f"l{i}" for i in range(9)])


def test_labels_flag() -> None:
    assert parse_labels("gpu, arm,,gpu") == ("arm", "gpu")
    assert parse_labels(None) == ()
    with pytest.raises(UsageError, match="'a b'"):
        parse_labels("a b")


def test_payload_round_trip_and_foreign_payloads() -> None:
    payload = JobPayload("orch-1", "w2")
    assert JobPayload.decode(payload.encode()) == payload
    for raw in (None, b"", b"not json", b"[1]", b'{"o": 1, "i": "x"}'):
        assert JobPayload.decode(raw) is None


@pytest.mark.parametrize(
    ("status", "attempts", "session", "visible", "action"),
    [
        ("pending", 0, False, False, ClaimAction.FIRST),
        ("running", 1, True, True, ClaimAction.CONTINUE),
        ("running", 1, True, False, ClaimAction.RESTART),
        ("retrying", 2, False, True, ClaimAction.RESTART),
        ("pending", 1, True, True, ClaimAction.CONTINUE),  # handed back before it started
        ("completed", 1, True, True, ClaimAction.ENDED),
        ("failed", 1, True, False, ClaimAction.ENDED),
        ("blocked", 1, True, False, ClaimAction.ENDED),
    ],
)
def test_what_a_claim_means(
    status: str, attempts: int, session: bool, visible: bool, action: ClaimAction
) -> None:
    assert decide_claim(status, attempts, session, visible) is action


def test_fence_and_self_fence() -> None:
    assert not fenced_out(3, 3)
    assert fenced_out(3, 4)
    assert fenced_out(3, None)
    assert not must_self_fence(10.0, 30.0)
    assert must_self_fence(18.0, 30.0)  # well before the lease others wait out
    # the stop's grace is cut so the copy is killed with a margin before the lease ends
    assert kill_within(18.0, 30.0) == pytest.approx(7.5)
    assert kill_within(1.8, 3.0) == pytest.approx(0.75)
    assert kill_within(29.0, 30.0) == 0.0
    assert 18.0 + kill_within(18.0, 30.0) < 30.0


def test_not_before() -> None:
    assert not_before_s(2.0, 0.0) == 2.0
    assert not_before_s(2.0, 3600.0) == 3602.0
    assert not_before_s(0.0, -5.0) == 0.0


def test_shared_budgets_add_the_other_runners_use_once() -> None:
    from datetime import UTC, datetime
    from pathlib import Path

    from coordinator.budget.rules import budgets_from_plan
    from coordinator.config import parse_config
    from coordinator.db.rows import InstanceRow
    from coordinator.fleet.budgets import (
        SharedTally,
        Watch,
        alarm_payload,
        command_groups,
        exceeded_keys,
        parse_alarm,
        watches,
    )
    from coordinator.plan import RunOptions, build_plan

    config = parse_config(
        {
            "orchestration": {
                "budget": {"overall_tokens": 1000, "command_budgets": {"/x": 500}},
            },
            "instances": [
                {"name": "a", "command": "/x go"},
                {"name": "b", "command": "/x go"},
                {"name": "c", "command": "/y go"},
            ],
        }
    )
    plan = build_plan(
        config,
        RunOptions(orchestration_id="t"),
        claude_bin="claude",
        config_path=None,
        cwd=Path("/tmp"),
        now=datetime.now(UTC),
    )
    alone = dataclasses.replace(plan, instances=plan.instances[:1])  # the engine of "a"
    book = budgets_from_plan(alone)
    tally = SharedTally()

    def row(name: str, tokens: int) -> InstanceRow:
        return InstanceRow("t", name, "running", input_tokens=tokens, total_tokens=tokens)

    events = tally.apply(book, plan, "a", {"a": row("a", 999), "b": row("b", 300)})
    assert events == []  # a's own row is not counted twice; b's 300 is under both
    events = tally.apply(book, plan, "a", {"b": row("b", 450), "c": row("c", 400)})
    by_key = {e.budget.key: e for e in events}
    assert book.budgets[0].used == 850  # overall: b and c
    assert by_key["overall"].threshold == 80 and not by_key["overall"].exceeded
    assert by_key["command:/x"].threshold == 80  # only b runs /x
    events = tally.apply(book, plan, "a", {"b": row("b", 600), "c": row("c", 401)})
    assert {(e.budget.key, e.exceeded) for e in events if e.exceeded} == {
        ("overall", True),
        ("command:/x", True),
    }
    assert exceeded_keys(book) == {"overall": 1001.0, "command:/x": 600.0}  # announced
    assert watches("t", book, command_groups(plan)) == []  # exceeded: nothing to watch

    # what the row writes watch: the shared budgets not known exceeded; a command budget
    # covers that command's instances of the whole run, not only the hosted one
    unseen = budgets_from_plan(alone)
    assert watches("t", unseen, command_groups(plan)) == [
        Watch("t", "overall", 1000, True, True, None),
        Watch("t", "command:/x", 500, True, True, frozenset({"a", "b"})),
    ]
    assert [w.key for w in watches("t", unseen, command_groups(plan), ["overall"])] == [
        "command:/x"
    ]

    # another runner's announcement: the crossing as a poll would show it, once, with the
    # run's use; the next poll goes on from there without counting anything twice
    fresh, heard = budgets_from_plan(alone), SharedTally()
    [event] = heard.apply_alarm(fresh, "command:/x", "a", 620.0)
    assert event.exceeded and event.budget.key == "command:/x" and event.budget.used == 620
    assert heard.apply_alarm(fresh, "command:/x", "a", 700.0) == []
    assert heard.apply_alarm(fresh, "command:/y", "a", 700.0) == []  # no such budget
    assert heard.apply_alarm(fresh, "overall", "nobody", 2000.0) == []  # not hosted here
    assert set(exceeded_keys(fresh)) == {"command:/x"}
    heard.apply(fresh, plan, "a", {"b": row("b", 630), "c": row("c", 401)})
    assert fresh.budgets[1].used == 630  # b's 630 on /x: the alarm's 620 is not added to it
    payload = alarm_payload("o-1", "command:/x", 620.5)
    assert parse_alarm(payload) == ("o-1", "command:/x", 620.5)
    assert parse_alarm("no separator") is None
    assert parse_alarm("\toverall\t1") is None
    assert parse_alarm("o-1\toverall\tmuch") is None


def test_a_runner_joins_the_hosted_queues_its_labels_serve() -> None:
    assert hosted_entrypoint([], "o-1") == "coordinator@o-1"
    assert hosted_entrypoint(["gpu", "a"], "o-1") == "coordinator:a,gpu@o-1"
    assert serves((), "coordinator@o-1") and serves((), "coordinator")
    assert serves(("a", "gpu", "x"), "coordinator:a,gpu@o-1")
    assert not serves(("gpu",), "coordinator:a,gpu@o-1")
    assert not serves(("a", "gpu"), "elsewhere:a@o-1")  # another user of the queue tables
    # an id with the separator in it is still the run's: only the first one splits
    assert serves(("a",), hosted_entrypoint(["a"], "o@2"))


@pytest.mark.parametrize(
    ("status", "claimed", "expected"),
    [
        ("completed", True, Route.ENDED),
        ("cancelled", False, Route.ENDED),
        ("pending", False, Route.UNCLAIMED),
        ("paused", False, Route.UNCLAIMED),
        ("pending", True, Route.HELD),  # claimed, not launched yet: its runner applies it
        ("running", True, Route.HELD),
        ("retrying", True, Route.HELD),  # handed back: the next claim applies the want
    ],
)
def test_where_a_control_command_takes_effect(status: str, claimed: bool, expected: Route) -> None:
    assert route(status, claimed) is expected
