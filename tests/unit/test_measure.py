"""The pure pieces of measuring (coordinator/measure/): JUnit and metrics parsing, quality,
series downsampling, the memory-limit and time-budget decisions, tool attribution, and the
config and plan that feed them."""

from __future__ import annotations

import itertools
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import parse_config
from coordinator.control.resume import seed_state
from coordinator.db.rows import InstanceRow
from coordinator.engine.state import InstanceState
from coordinator.errors import ConfigError
from coordinator.measure.quality import (
    JunitCounts,
    QualityInputError,
    VerifyOutcome,
    last_line_metrics,
    parse_junit,
    quality_of,
    structured_quality,
)
from coordinator.measure.rules import Action, memory_decision, time_decision
from coordinator.measure.series import SERIES_POINTS, Series, downsample
from coordinator.measure.tools import ToolLedger
from coordinator.plan import RunOptions, build_plan
from runner.accounting import Accountant
from runner.events import Assistant, ToolResult, ToolUse, UserToolResults
from runner.progress import MilestoneTracker, ProgressTracker

PYTEST_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="2" skipped="1"
 tests="10" time="0.1"><testcase classname="t" name="a"/></testsuite></testsuites>"""


def outcome(**kw: Any) -> VerifyOutcome:
    base: dict[str, Any] = {"argv": ("v",), "exit_code": 0, "duration_s": 0.5, "timed_out": False}
    return VerifyOutcome(**{**base, **kw})


# ------------------------------------------------------------------ JUnit
def test_junit_pytest_totals_and_ratio() -> None:
    counts = parse_junit(PYTEST_XML)
    assert counts == JunitCounts(tests=10, failures=2, errors=1, skipped=1)
    assert counts.passed == 6
    assert counts.ratio == pytest.approx(6 / 9)  # skipped ones are not in the denominator


def test_junit_counts_cases_when_attributes_are_missing_and_sums_suites() -> None:
    xml = b"""<testsuites>
      <testsuite name="a"><testcase name="1"/><testcase name="2"><failure/></testcase></testsuite>
      <testsuite name="b" tests="3" failures="0" errors="0" skipped="1"/>
    </testsuites>"""
    assert parse_junit(xml) == JunitCounts(tests=5, failures=1, errors=0, skipped=1)
    single = b'<testsuite tests="4" failures="1"><testcase name="x"/></testsuite>'
    assert parse_junit(single) == JunitCounts(tests=4, failures=1, errors=0, skipped=0)


def test_junit_no_tests_is_zero() -> None:
    assert parse_junit(b'<testsuite tests="0"/>').ratio == 0.0


@pytest.mark.parametrize(
    "data",
    [
        b"not xml at all",
        b"<html/>",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><testsuite tests="1"/>',
    ],
)
def test_junit_refused(data: bytes) -> None:
    with pytest.raises(QualityInputError):
        parse_junit(data)


# ------------------------------------------------------------------ metrics and quality
def test_last_line_metrics_numbers_only() -> None:
    out = b'noise\n{"quality": 0.75, "coverage": 81, "ok": true, "name": "x"}\n\n'
    assert last_line_metrics(out) == {"quality": 0.75, "coverage": 81.0}
    assert last_line_metrics(b'{"a": 1}\nlast line is text\n') is None
    assert last_line_metrics(b"[1, 2]") is None
    assert last_line_metrics(b"") is None


def test_quality_prefers_junit_then_metrics_then_exit_status() -> None:
    q = quality_of(
        outcome(junit=PYTEST_XML, stdout=b'{"quality": 0.1}', exit_code=1),
        expected=0.6,
        ran_after="completed",
    )
    assert q["source"] == "junit" and q["score"] == pytest.approx(6 / 9, abs=1e-6)
    assert q["met"] is True and q["expected"] == 0.6 and q["ran_after"] == "completed"
    assert q["verify"]["junit"] == {"tests": 10, "failures": 2, "errors": 1, "skipped": 1}
    assert q["metrics"]["quality"] == 0.1 and q["metrics"]["passed"] == 6

    q = quality_of(outcome(stdout=b'{"quality": 0.5, "lint": 3}'), expected=0.8, ran_after="failed")
    assert (q["source"], q["score"], q["met"]) == ("metrics", 0.5, False)
    assert q["metrics"] == {"quality": 0.5, "lint": 3.0} and q["verify"]["junit"] is None

    q = quality_of(outcome(exit_code=3, junit=b"garbage"), expected=None, ran_after="timeout")
    assert (q["source"], q["score"], q["met"]) == ("exit_status", 0.0, None)
    assert quality_of(outcome(), expected=1.0, ran_after="completed")["score"] == 1.0


def test_quality_from_named_metrics_without_a_quality_key() -> None:
    out = b'{"accuracy": 0.9, "recall": 0.7, "other": 5}'
    q = quality_of(
        outcome(stdout=out),
        expected=0.8,
        ran_after="completed",
        quality_metrics=("accuracy", "recall"),
    )
    assert (q["source"], q["score"], q["met"]) == ("metrics", 0.8, True)
    # a named metric missing: the exit status decides
    q = quality_of(
        outcome(stdout=out), expected=None, ran_after="completed", quality_metrics=("f1",)
    )
    assert q["source"] == "exit_status"


def test_quality_timed_out_or_not_started() -> None:
    q = quality_of(
        outcome(exit_code=None, timed_out=True, junit=PYTEST_XML),
        expected=0.5,
        ran_after="completed",
    )
    assert (q["source"], q["score"], q["met"]) == ("exit_status", 0.0, False)
    assert q["verify"]["timed_out"] is True
    q = quality_of(outcome(exit_code=None), expected=0.5, ran_after="completed")
    assert q["score"] is None and q["met"] is None


# ------------------------------------------------------------------ series
def point(i: int) -> tuple[float, int, float, float, float]:
    return (float(i), i * 10, i / 100, 100.0 + i, min(100.0, float(i)))


def test_downsample_even_keeps_first_and_last() -> None:
    points = [point(i) for i in range(1000)]
    out = downsample(points, 240)
    assert len(out) == 240 and out[0] == points[0] and out[-1] == points[-1]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(out)]
    assert max(gaps) - min(gaps) <= 1.0  # evenly spread
    assert downsample(points[:5], 240) == points[:5]


def test_series_bounded_for_any_length_and_keeps_the_latest() -> None:
    series = Series()
    for i in range(100_000):
        series.add(point(i))
        assert len(series._points) < 2 * SERIES_POINTS
    out = series.as_lists()
    assert len(out) == SERIES_POINTS
    assert out[0][0] == 0.0 and out[-1] == [99999.0, 999990, 999.99, 100099.0, 100.0]
    ts = [p[0] for p in out]
    assert ts == sorted(ts)


# ------------------------------------------------------------------ decisions
def test_memory_decision() -> None:
    assert memory_decision(300, None, block=True, already=False).action is Action.NONE
    assert memory_decision(200, 256, block=True, already=False).action is Action.NONE
    warn = memory_decision(301.4, 256, block=False, already=False)
    assert warn.action is Action.WARN and "301 MB" in warn.text and "256 MB" in warn.text
    assert memory_decision(400, 256, block=False, already=True).action is Action.NONE
    stop = memory_decision(1101, 700, block=True, already=False)
    assert stop.action is Action.STOP
    assert memory_decision(1200, 700, block=True, already=True).action is Action.NONE
    assert stop.text == "blocked: memory 1,101 MB over the limit of 700 MB (memory_limit_mb)"


def test_time_decision() -> None:
    assert time_decision(10, None, enforce=True, already=False).action is Action.NONE
    assert time_decision(59.9, 60, enforce=True, already=False).action is Action.NONE
    warn = time_decision(60.5, 60, enforce=False, already=False)
    assert warn.action is Action.WARN and "time budget 60s" in warn.text
    stop = time_decision(61, 60, enforce=True, already=False)
    assert stop.action is Action.STOP and stop.text.startswith("timed out: time budget 60s")
    assert time_decision(99, 60, enforce=True, already=True).action is Action.NONE


# ------------------------------------------------------------------ tools
def assistant(msg: str, *tools: tuple[str, str]) -> Assistant:
    return Assistant(msg, None, None, (), tuple(ToolUse(i, n, {}) for i, n in tools), None)


def test_tool_ledger_calls_errors_and_turn_tokens() -> None:
    ledger = ToolLedger()
    ledger.feed(assistant("m1", ("t1", "Bash")))
    ledger.feed(assistant("m1", ("t1", "Bash")))  # the same block again: one call
    ledger.feed(assistant("m2", ("t2", "Bash"), ("t3", "Write")))
    ledger.feed(UserToolResults((ToolResult("t2", True, "boom"), ToolResult("t3", False, "ok"))))
    tokens = {"m1": 100, "m2": 40}
    out = ledger.as_dict(lambda m: tokens.get(m, 0), {"Edit": 1})
    assert out == {
        "Bash": {"calls": 2, "errors": 1, "denials": 0, "tokens": 140},
        "Edit": {"calls": 0, "errors": 0, "denials": 1, "tokens": 0},
        "Write": {"calls": 1, "errors": 0, "denials": 0, "tokens": 40},
    }


# ------------------------------------------------------------------ config and plan
def plan_of(config: dict[str, Any], tmp_path: Path) -> Any:
    return build_plan(
        parse_config(config, source="c.json"),
        RunOptions(orchestration_id="o"),
        claude_bin="claude",
        config_path=tmp_path / "configs" / "c.json",
        cwd=tmp_path,
        now=datetime.now(UTC),
    )


def test_verify_inherited_and_resolved_against_the_config(tmp_path: Path) -> None:
    config = {
        "orchestration": {
            "verify": {"argv": ["../.venv/bin/python", "-m", "pytest"], "junit": "v.xml"},
            "memory_limit_mb": 512,
            "enforce_time_budget": True,
        },
        "instances": [
            {
                "command": "a",
                "name": "a",
                "scenario": {"time_budget_seconds": 5, "expected_quality": 0.9},
            },
            {
                "command": "b",
                "name": "b",
                "verify": {"argv": ["pytest"], "timeout_s": 3},
                "memory_limit_mb": 64,
                "scenario": {"enforce_time_budget": False, "quality_metrics": ["x"]},
            },
        ],
    }
    a, b = plan_of(config, tmp_path).instances
    assert a.measure.verify is not None and b.measure.verify is not None
    assert a.measure.verify.argv == (str(tmp_path / ".venv/bin/python"), "-m", "pytest")
    assert a.measure.verify.field == "orchestration.verify" and a.measure.verify.timeout_s == 120
    assert (a.measure.memory_limit_mb, a.measure.time_budget_s) == (512, 5)
    assert a.measure.enforce_time_budget is True and a.measure.expected_quality == 0.9
    assert b.measure.verify.argv == ("pytest",) and b.measure.verify.field == "instances[1].verify"
    assert b.measure.memory_limit_mb == 64 and b.measure.enforce_time_budget is False
    assert b.measure.quality_metrics == ("x",)


@pytest.mark.parametrize(
    ("verify", "field"),
    [
        ({"argv": []}, "instances[0].verify.argv"),
        ({"argv": [""]}, "instances[0].verify.argv"),
        ({"argv": ["x"], "timeout_s": 0}, "instances[0].verify.timeout_s"),
        ({"argv": ["x"], "timeout_s": "5"}, "instances[0].verify.timeout_s"),
        ({"argv": ["x"], "junit": "../out.xml"}, "instances[0].verify.junit"),
        ({"argv": ["x"], "junit": "/tmp/out.xml"}, "instances[0].verify.junit"),
        ({"argv": "pytest -q"}, "instances[0].verify.argv"),
        ({"argv": ["x"], "shell": True}, "instances[0].verify.shell"),
    ],
)
def test_bad_verify_block_is_one_config_error(verify: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"instances": [{"command": "a", "verify": verify}]}, source="c.json")
    assert field in str(info.value) and "\n" not in str(info.value)


def test_bad_memory_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"memory_limit_mb"):
        parse_config({"instances": [{"command": "a", "memory_limit_mb": -1}]}, source="c.json")


def test_structured_output_quality() -> None:
    q = structured_quality({"quality": 0.4, "x": True}, expected=0.5, ran_after="completed")
    assert (q["source"], q["score"], q["met"], q["metrics"]) == (
        "structured_output",
        0.4,
        False,
        {"quality": 0.4},
    )
    q = structured_quality("not an object", expected=0.5, ran_after="failed")
    assert q["score"] is None and q["met"] is None and q["metrics"] == {}


def test_resume_keeps_the_measures_of_an_instance_it_does_not_launch_again() -> None:
    stored = {"quality": {"score": 0.5}, "series": [[0.0, 0, 0.0, 0.0, 0.0]], "tools": {}}
    row = InstanceRow("o", "a", "completed", measures=stored)

    def state() -> InstanceState:
        return InstanceState(
            plan=None,  # type: ignore[arg-type]  # not read here
            accountant=Accountant(),
            progress=ProgressTracker(total_steps=1),
            milestones=MilestoneTracker((30,)),
            output_tail=deque(),
            stderr_tail=deque(),
        )

    kept = state()
    seed_state(kept, row, relaunch=False)
    assert kept.measures() == stored
    again = state()
    seed_state(again, row, relaunch=True)  # launched again: measured afresh
    assert again.measures()["quality"] is None and again.measures()["series"] == []
    kept.measure.point(1.0, 10, 0.1, 50.0)  # (a process measured it after all)
    assert kept.measures()["series"] == [[1.0, 10, 0.1, 0.0, 50.0]]
