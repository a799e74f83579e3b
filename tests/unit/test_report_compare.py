"""The pure comparison: fits on known data, words and where the slope changes, per-scenario
figures, recommendations, and results documents with and without measures."""

from __future__ import annotations

import math
from typing import Any

import pytest

from coordinator.report.compare import compare
from coordinator.report.facts import ReportInputError, facts_from_results
from coordinator.report.scaling import describe, fit_power_law, words_for

T0 = "2026-12-01T10:00:00+00:00"


def at(seconds: float) -> str:
    return f"2026-12-01T10:{int(seconds // 60):02d}:{seconds % 60:06.3f}+00:00"


def instance(
    name: str,
    difficulty: str | None,
    mult: float,
    *,
    tokens: int = 1000,
    cost: float = 0.01,
    duration: float = 10.0,
    wait: float = 0.0,
    status: str = "completed",
    measures: dict[str, Any] | None = None,
    expected: float | str | None = None,
    budget: float | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "status": status,
        "started_at": at(0),
        "ended_at": at(duration),
        "duration_s": duration,
        "wait_s": wait,
        "paused_s": 0.0,
        "total_tokens": tokens,
        "total_cost_usd": cost,
        "tool_calls": {"Bash": 2},
        "progress_pct": 100.0,
        "milestones": [{"pct": 50, "at": at(duration / 2), "elapsed_s": duration / 2}],
        "sync_waits": [],
        "scenario": {
            "difficulty": difficulty,
            "complexity_multiplier": mult,
            "input_size": None,
            "time_budget_seconds": budget,
            "expected_quality": expected,
        }
        if difficulty is not None
        else None,
    }
    if measures is not None:
        doc["measures"] = measures
    return doc


def results(*instances: dict[str, Any]) -> dict[str, Any]:
    return {"orchestration_id": "o-1", "started_at": T0, "instances": list(instances)}


def quality(score: float | None, expected: float | None = None, **junit: int) -> dict[str, Any]:
    return {
        "quality": {
            "score": score,
            "expected": expected,
            "met": None if score is None or expected is None else score >= expected,
            "source": "junit",
            "metrics": {},
            "ran_after": "completed",
            "verify": {
                "argv": ["pytest"],
                "exit_code": 0,
                "duration_s": 1.0,
                "timed_out": False,
                "junit": junit or None,
            },
        }
    }


def test_square_root_data_is_sublinear_with_exponent_one_half() -> None:
    fit = fit_power_law("time_s", [(x, 3.0 * math.sqrt(x)) for x in (1, 2, 4, 8, 16)])
    assert fit is not None
    assert fit.exponent == pytest.approx(0.5, abs=0.01)
    assert fit.coefficient == pytest.approx(3.0, rel=1e-6)
    assert fit.words == "sublinear"
    assert fit.r_squared == pytest.approx(1.0)
    assert fit.summary == "sublinear from 1x to 16x"


def test_words_and_thresholds() -> None:
    assert [words_for(b) for b in (0.89, 0.9, 1.0, 1.1, 1.11)] == [
        "sublinear",
        "linear",
        "linear",
        "linear",
        "superlinear",
    ]
    squares = fit_power_law("tokens", [(1, 1), (3, 9), (8, 64)])
    assert squares is not None and squares.exponent == pytest.approx(2.0)
    assert squares.words == "superlinear"


def test_where_the_local_slope_changes() -> None:
    # 1x -> 3x grows by 3**0.5, 3x -> 8x by (8/3)**2: sublinear, then superlinear
    y3 = 3**0.5
    fit = fit_power_law("time_s", [(1, 1.0), (3, y3), (8, y3 * (8 / 3) ** 2)])
    assert fit is not None
    assert [round(s.exponent, 3) for s in fit.segments] == [0.5, 2.0]
    assert fit.summary == "sublinear up to 3x, superlinear at 8x"
    assert 0.5 < fit.exponent < 2.0 and fit.r_squared is not None and fit.r_squared < 1


def test_describe_merges_runs_of_the_same_word() -> None:
    fit = fit_power_law("x", [(1, 1), (2, 2), (4, 4), (8, 40), (16, 400)])
    assert fit is not None
    assert describe(fit.segments) == "linear up to 4x, superlinear from 4x to 16x"


def test_fit_needs_two_tiers_with_positive_values() -> None:
    assert fit_power_law("x", [(1, 5.0)]) is None
    assert fit_power_law("x", [(1, 5.0), (3, 0.0)]) is None  # log(0): left out
    assert fit_power_law("x", [(2, 5.0), (2, 7.0)]) is None  # one tier, two items
    two = fit_power_law("x", [(1, 2.0), (1, 4.0), (4, 12.0)])  # the 1x items averaged: 3
    assert two is not None and two.exponent == pytest.approx(1.0) and two.r_squared is None


def test_per_scenario_figures_are_the_instances_own() -> None:
    run = facts_from_results(
        results(
            instance("s1", "simple", 1, tokens=1000, cost=0.01, duration=10, wait=2),
            instance("s2", "simple", 1, tokens=3000, cost=0.03, duration=14, wait=0),
            instance("m", "medium", 3, tokens=6000, cost=0.05, duration=30),
            instance("c", "complex", 8, tokens=30000, cost=0.4, duration=200, status="timeout"),
        )
    )
    comp = compare(run)
    assert [s.name for s in comp.scenarios] == ["simple", "medium", "complex"]
    simple = comp.scenario("simple")
    assert simple.items == 2 and simple.completed == 2
    assert simple.tokens == 4000 and simple.tokens_per_item == 2000
    assert simple.cost_usd == pytest.approx(0.04)
    assert simple.time_s == pytest.approx((8 + 14) / 2)  # working time: waits left out
    assert simple.duration_s == pytest.approx(12) and simple.wait_s == pytest.approx(1)
    assert simple.quality is None and simple.met is None and simple.peak_mb is None
    assert comp.x_axis == "complexity_multiplier"
    tokens = comp.scaling["tokens"]
    assert tokens is not None and tokens.points == ((1, 2000), (3, 6000), (8, 30000))
    kinds = [r.kind for r in comp.recommendations]
    assert "no_quality" in kinds
    assert any(r.kind == "not_completed" and r.scenario == "complex" for r in comp.recommendations)
    doc = comp.as_dict()
    assert doc["scenarios"][0]["quality"] is None and doc["scaling"]["tokens"]["exponent"] > 1


def test_quality_recommendations_best_value_and_missed() -> None:
    run = facts_from_results(
        results(
            instance(
                "simple", "simple", 1, cost=0.01, measures=quality(1.0, 0.9, tests=4, failures=0)
            ),
            instance(
                "medium", "medium", 3, cost=0.02, measures=quality(0.9, 0.85, tests=10, failures=1)
            ),
            instance(
                "complex",
                "complex",
                8,
                cost=0.2,
                measures=quality(0.5, 0.8, tests=8, failures=3, errors=1),
            ),
        )
    )
    comp = compare(run)
    by_kind = {r.kind: r for r in comp.recommendations}
    assert by_kind["best_value"].scenario == "simple"  # 100 quality per dollar vs 45
    assert "quality 1.00 at $0.0100 per item" in by_kind["best_value"].reason
    missed = [r for r in comp.recommendations if r.kind == "missed_expectation"]
    assert [r.scenario for r in missed] == ["complex"]
    assert "4 of 8 tests passed" in missed[0].reason and "0.80" in missed[0].reason
    assert comp.quality["ranking"] == ["simple", "medium", "complex"]
    assert comp.quality["missed"] == ["complex"] and comp.quality["spread"] == 0.5
    medium = comp.scenario("medium")
    assert medium.quality_per_usd == pytest.approx(0.9 / 0.02)
    assert medium.quality_per_minute == pytest.approx(0.9 / (10 / 60))


def test_expected_quality_from_the_scenario_when_measures_lack_it() -> None:
    run = facts_from_results(
        results(instance("a", "simple", 1, measures=quality(0.7), expected="0.85"))
    )
    [inst] = run.instances
    assert inst.expected_quality == 0.85 and inst.quality_met is False


def test_bottleneck_is_the_resource_nearest_its_limit() -> None:
    mem = {"memory": {"peak_mb": 900.0, "limit_mb": 1024.0, "exceeded_at_s": None}}
    run = facts_from_results(
        results(
            instance("s", "simple", 1, duration=10, budget=60),
            instance("c", "complex", 8, duration=100, budget=480, measures=mem),
        )
    )
    comp = compare(run)
    assert comp.bottleneck == "memory"
    rec = next(r for r in comp.recommendations if r.kind == "bottleneck")
    assert rec.reason == "complex peaked at 900 MB of its 1024 MB limit"
    assert comp.scenario("complex").peak_mb == 900.0


def test_bottleneck_falls_back_to_what_grows_fastest() -> None:
    run = facts_from_results(
        results(
            instance("s", "simple", 1, tokens=1000, duration=10),
            instance("c", "complex", 8, tokens=64000, duration=20),
        )
    )
    comp = compare(run)
    assert comp.bottleneck == "tokens"
    assert "exponent 2.00" in next(r.reason for r in comp.recommendations if r.kind == "bottleneck")


def test_no_scenarios_groups_by_name_and_does_not_scale() -> None:
    run = facts_from_results(results(instance("a", None, 1), instance("b", None, 1)))
    comp = compare(run)
    assert [s.name for s in comp.scenarios] == ["a", "b"]
    assert comp.x_axis is None and comp.scaling == {} and not run.has_scenarios


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a results document: a list"),
        ({"instances": []}, "orchestration_id = None"),
        ({"orchestration_id": "x"}, "instances: missing"),
        (
            {"orchestration_id": "x", "instances": [{"name": "a", "total_tokens": "many"}]},
            "instances[0].total_tokens = 'many': not a number",
        ),
        (
            {"orchestration_id": "x", "instances": [{"name": "a", "measures": {"quality": 3}}]},
            "instances[0].measures.quality: not an object",
        ),
        (
            {
                "orchestration_id": "x",
                "instances": [{"name": "a", "measures": {"series": [["t", 1]]}}],
            },
            "instances[0].measures.series[0][0] = 't': not a number",
        ),
    ],
)
def test_bad_documents_are_one_line_naming_the_field(doc: Any, message: str) -> None:
    with pytest.raises(ReportInputError) as err:
        facts_from_results(doc)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_comparison_that_cannot_be_made_never_costs_the_results() -> None:
    from coordinator.report.section import comparison_section, end_of_run_table

    bad = {"orchestration_id": "o", "instances": [{"status": "completed"}]}  # no name
    assert comparison_section(bad) == {"error": "no comparison: instances[0].name: missing"}
    assert end_of_run_table(bad) is None
    good = results(instance("a", "simple", 1), instance("b", "complex", 8))
    assert comparison_section(good)["scenarios"][1]["name"] == "complex"
    assert end_of_run_table(good) is not None
    assert end_of_run_table(results(instance("a", None, 1))) is None  # no scenarios: no table


def test_input_size_is_the_axis_when_the_multipliers_do_not_differ() -> None:
    docs = []
    for name, size, tokens in (("small", 10, 1000), ("large", 40, 2000)):
        inst = instance(name, name, 1, tokens=tokens)
        inst["scenario"]["input_size"] = size
        docs.append(inst)
    comp = compare(facts_from_results(results(*docs)))
    assert comp.x_axis == "input_size"
    fit = comp.scaling["tokens"]
    assert fit is not None and fit.exponent == pytest.approx(0.5)  # 4x the input, 2x tokens
    assert fit.summary == "sublinear from 10 to 40"
