"""Results documents that follow the contract of the run's results JSON, measures included
(the block the measuring side writes per instance), for the report's tests."""

from __future__ import annotations

from typing import Any

T0 = "2026-12-01T10:00:00+00:00"

# A name that would break out of a <script> or a tag if it were not escaped.
EVIL = '</script><script>window.PWNED=1</script><img src=x onerror="window.PWNED=2">'


def at(seconds: float) -> str:
    return f"2026-12-01T10:{int(seconds // 60):02d}:{seconds % 60:06.3f}+00:00"


def measures(
    score: float | None,
    expected: float | None,
    *,
    tests: int,
    failures: int,
    peak_mb: float | None,
    limit_mb: float | None,
    duration: float,
    tokens: int,
    cost: float,
) -> dict[str, Any]:
    return {
        "quality": {
            "score": score,
            "expected": expected,
            "met": None if score is None or expected is None else score >= expected,
            "source": "junit",
            "metrics": {"tests": tests},
            "ran_after": "completed",
            "verify": {
                "argv": ["python", "-m", "pytest", "-q", "--junitxml=verify.xml"],
                "exit_code": 1 if failures else 0,
                "duration_s": 0.8,
                "timed_out": False,
                "junit": {"tests": tests, "failures": failures, "errors": 0, "skipped": 0},
            },
        },
        "memory": {"peak_mb": peak_mb, "limit_mb": limit_mb, "exceeded_at_s": None},
        "time_budget": {"seconds": None, "exceeded_at_s": None, "enforced": False},
        "tools": {"Bash": {"calls": 2, "errors": 0, "denials": 0, "tokens": tokens // 2}},
        "series": [
            [0.0, 0, 0.0, 20.0, 0.0],
            [duration / 2, tokens // 2, cost / 2, peak_mb or 30.0, 50.0],
            [duration, tokens, cost, peak_mb or 30.0, 100.0],
        ],
    }


def instance(
    name: str,
    difficulty: str,
    mult: float,
    *,
    tokens: int,
    cost: float,
    duration: float,
    start: float = 0.0,
    wait: float = 0.0,
    status: str = "completed",
    expected: float = 0.8,
    score: float | None = 1.0,
    tests: int = 4,
    failures: int = 0,
    peak_mb: float | None = 100.0,
    limit_mb: float | None = 512.0,
    with_measures: bool = True,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "description": f"{difficulty} tier",
        "status": status,
        "started_at": at(start),
        "ended_at": at(start + duration),
        "duration_s": duration,
        "wait_s": wait,
        "paused_s": 0.0,
        "sync_waits": [{"point": "milestone:50", "waited_s": wait, "timed_out": False}]
        if wait
        else [],
        "input_tokens": tokens // 10,
        "output_tokens": tokens // 10,
        "cache_read_tokens": tokens - 3 * (tokens // 10),
        "cache_creation_tokens": tokens // 10,
        "total_tokens": tokens,
        "total_cost_usd": cost,
        "tool_calls": {"Bash": 2, "Write": 1},
        "progress_pct": 100.0,
        "milestones": [
            {"pct": 50, "at": at(start + duration / 3), "elapsed_s": duration / 3},
        ],
        "scenario": {
            "difficulty": difficulty,
            "complexity_multiplier": mult,
            "input_size": int(mult),
            "time_budget_seconds": 60 * mult,
            "expected_quality": expected,
        },
    }
    if with_measures:
        doc["measures"] = measures(
            score,
            expected,
            tests=tests,
            failures=failures,
            peak_mb=peak_mb,
            limit_mb=limit_mb,
            duration=duration,
            tokens=tokens,
            cost=cost,
        )
    return doc


def run_doc(orchestration_id: str = "orch-report-1", *, name0: str = "simple") -> dict[str, Any]:
    """Three tiers: simple meets its expectation, medium too, complex misses it."""
    return {
        "schema_version": 1,
        "orchestration_id": orchestration_id,
        "started_at": T0,
        "ended_at": at(95),
        "duration_s": 95.0,
        "exit_code": 0,
        "interrupted": False,
        "instances": [
            instance(
                name0,
                "simple",
                1,
                tokens=12_345,
                cost=0.0123,
                duration=10,
                score=1.0,
                expected=0.9,
                peak_mb=80.0,
                limit_mb=256.0,
            ),
            instance(
                "medium",
                "medium",
                3,
                tokens=45_678,
                cost=0.0456,
                duration=28,
                start=1,
                wait=3.0,
                score=0.9,
                tests=10,
                failures=1,
                expected=0.85,
                peak_mb=200.0,
            ),
            instance(
                "complex",
                "complex",
                8,
                tokens=234_567,
                cost=0.2345,
                duration=92,
                start=2,
                score=0.625,
                tests=8,
                failures=3,
                expected=0.8,
                peak_mb=700.0,
                limit_mb=1024.0,
            ),
        ],
    }
