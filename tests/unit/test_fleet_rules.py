"""The fleet's pure decisions: queues per label set, payloads, claims, the fence."""

from __future__ import annotations

import pytest

from coordinator.errors import UsageError
from coordinator.fleet.rules import (
    ClaimAction,
    JobPayload,
    decide_claim,
    entrypoint_for,
    entrypoints_for_runner,
    fenced_out,
    must_self_fence,
    not_before_s,
    parse_labels,
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


def test_not_before() -> None:
    assert not_before_s(2.0, 0.0) == 2.0
    assert not_before_s(2.0, 3600.0) == 3602.0
    assert not_before_s(0.0, -5.0) == 0.0
