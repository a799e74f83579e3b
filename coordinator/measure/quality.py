"""Quality from a verify command's outcome. Pure.

In order: the pass ratio of the JUnit XML file it wrote (passed / (tests - skipped); no test
run at all is 0.0), else the numbers of a JSON object on its last stdout line (its
``quality`` key is the score; every numeric key is kept as a metric), else its exit status
(0: 1.0, anything else: 0.0). A verify that timed out scores 0.0 from its exit status, what
it wrote notwithstanding.

The JUnit file is written by whatever ran in the workspace, so it is untrusted: read with a
size cap, and a file with a DOCTYPE (entity declarations: pytest, unittest-xml, jest and
surefire never write one) is refused before parsing. The standard library's expat then
resolves no external entities and (since expat 2.4.1) bounds entity expansion; with no
DOCTYPE there is nothing to expand, so defusedxml would add nothing.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import orjson

JUNIT_MAX_BYTES = 32 << 20
METRICS_LINE_MAX = 1 << 16


class QualityInputError(ValueError):
    """A verify output that cannot be read as what it claims to be."""


@dataclass(frozen=True, slots=True)
class JunitCounts:
    tests: int
    failures: int
    errors: int
    skipped: int

    @property
    def passed(self) -> int:
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    @property
    def ratio(self) -> float:
        ran = self.tests - self.skipped
        return round(self.passed / ran, 6) if ran > 0 else 0.0

    def as_dict(self) -> dict[str, int]:
        return {
            "tests": self.tests,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
        }


def parse_junit(data: bytes) -> JunitCounts:
    """The totals of a JUnit XML document (``<testsuites>`` or one ``<testsuite>``): summed
    over the innermost suites, from their attributes, or counted from their test cases
    where the attributes are missing."""
    if len(data) > JUNIT_MAX_BYTES:
        raise QualityInputError(f"JUnit file over {JUNIT_MAX_BYTES >> 20} MiB")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise QualityInputError("JUnit file declares a DOCTYPE or entities: refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise QualityInputError(f"JUnit file is not XML: {exc}") from None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if root.tag not in ("testsuite", "testsuites"):
        raise QualityInputError(f"JUnit file's root is <{root.tag}>, not <testsuites>")
    leaves = [s for s in suites if s.find("testsuite") is None]
    total = [0, 0, 0, 0]
    for suite in leaves:
        cases = suite.findall("testcase")
        counted = (
            len(cases),
            sum(1 for c in cases if c.find("failure") is not None),
            sum(1 for c in cases if c.find("error") is not None),
            sum(1 for c in cases if c.find("skipped") is not None),
        )
        for i, key in enumerate(("tests", "failures", "errors", "skipped")):
            total[i] += _count(suite.get(key), counted[i])
    if not leaves and root.tag == "testsuites":  # attributes on the root only
        for i, key in enumerate(("tests", "failures", "errors", "skipped")):
            total[i] = _count(root.get(key), 0)
    return JunitCounts(*total)


def _count(text: str | None, fallback: int) -> int:
    if text is None:
        return fallback
    try:
        value = int(float(text))
    except ValueError:
        return fallback
    return max(0, value)


def last_line_metrics(stdout: bytes) -> dict[str, float] | None:
    """The numeric members of a JSON object on the last non-blank stdout line, or None when
    that line is not one (booleans, NaN and infinities are not numbers here)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines or len(lines[-1]) > METRICS_LINE_MAX:
        return None
    try:
        obj = orjson.loads(lines[-1].strip())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    return {
        str(k): float(v)
        for k, v in obj.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """What the verify command did, as the adapter saw it."""

    argv: tuple[str, ...]
    exit_code: int | None  # None: never started, timed out or interrupted
    duration_s: float
    timed_out: bool
    stdout: bytes = b""  # its tail
    junit: bytes | None = None  # the JUnit file it wrote (None: none, or not this run's)
    junit_problem: str | None = None  # why a JUnit file could not be read


def quality_of(
    outcome: VerifyOutcome,
    *,
    expected: float | None,
    ran_after: str,
    quality_metrics: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The ``measures.quality`` object of the results (see the README)."""
    junit: JunitCounts | None = None
    metrics: dict[str, float] = {}
    if outcome.timed_out:
        score: float | None = 0.0
        source = "exit_status"
    else:
        if outcome.junit is not None:
            try:
                junit = parse_junit(outcome.junit)
            except QualityInputError:
                junit = None
        found = last_line_metrics(outcome.stdout)
        metrics = found or {}
        if junit is not None:
            score, source = junit.ratio, "junit"
        elif found is not None and _metrics_score(found, quality_metrics) is not None:
            score, source = _metrics_score(found, quality_metrics), "metrics"
        elif outcome.exit_code is not None:
            score, source = (1.0 if outcome.exit_code == 0 else 0.0), "exit_status"
        else:  # never started, or interrupted: nothing measured
            score, source = None, "exit_status"
    if junit is not None:
        metrics = {
            **metrics,
            "tests": float(junit.tests),
            "passed": float(junit.passed),
            "failures": float(junit.failures),
            "errors": float(junit.errors),
            "skipped": float(junit.skipped),
        }
    return {
        "score": score,
        "expected": expected,
        "met": met(score, expected),
        "source": source,
        "metrics": metrics,
        "ran_after": ran_after,
        "verify": {
            "argv": list(outcome.argv),
            "exit_code": outcome.exit_code,
            "duration_s": round(outcome.duration_s, 3),
            "timed_out": outcome.timed_out,
            "junit": junit.as_dict() if junit is not None else None,
        },
    }


def structured_quality(
    output: Any, *, expected: float | None, ran_after: str, quality_metrics: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Quality from claude's own ``result.structured_output`` (an instance run with
    ``--json-schema`` and no verify command): its numbers, scored like last-line metrics."""
    metrics = (
        {
            str(k): float(v)
            for k, v in output.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if isinstance(output, dict)
        else {}
    )
    score = _metrics_score(metrics, quality_metrics)
    return {
        "score": score,
        "expected": expected,
        "met": met(score, expected),
        "source": "structured_output",
        "metrics": metrics,
        "ran_after": ran_after,
        "verify": {
            "argv": [],
            "exit_code": None,
            "duration_s": 0.0,
            "timed_out": False,
            "junit": None,
        },
    }


def _metrics_score(metrics: dict[str, float], named: tuple[str, ...]) -> float | None:
    """Its ``quality`` member, else the mean of the scenario's ``quality_metrics`` when the
    line carries every one of them."""
    if "quality" in metrics:
        return metrics["quality"]
    if named and all(name in metrics for name in named):
        return round(sum(metrics[name] for name in named) / len(named), 6)
    return None


def met(score: float | None, expected: float | None) -> bool | None:
    if score is None or expected is None:
        return None
    return score >= expected
