"""What the comparison reads of a run: one typed record per instance, taken from a results
document (the results JSON, or ``orchestrations.results`` in Postgres) or from database
rows. Pure: no I/O. Every ``measures`` field is optional (a run before measurements, or
one that measured nothing): absent is None, never an error; a field of the wrong type is
one :class:`ReportInputError` naming it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.errors import CoordinatorError


class ReportInputError(CoordinatorError):
    """A results document the report cannot read: names the field and the value."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Milestone:
    pct: float
    at_s: float | None  # seconds since the run started (None: time unknown)


@dataclass(frozen=True, slots=True)
class SyncWait:
    point: str  # "milestone:30", "step:2"
    waited_s: float
    timed_out: bool
    start_s: float | None  # seconds since the run started, when it can be placed


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    t_s: float  # seconds since the instance started
    total_tokens: float | None
    cost_usd: float | None
    rss_mb: float | None
    progress_pct: float | None


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    name: str
    status: str
    description: str = ""
    difficulty: str | None = None
    complexity_multiplier: float | None = None
    input_size: float | None = None
    time_budget_s: float | None = None
    expected_quality: float | None = None
    total_tokens: int = 0
    cost_usd: float = 0.0
    duration_s: float = 0.0
    wait_s: float = 0.0
    paused_s: float = 0.0
    progress_pct: float = 0.0
    start_s: float | None = None  # seconds since the run started
    tool_calls: int = 0
    quality: float | None = None
    quality_met: bool | None = None
    quality_source: str | None = None
    quality_detail: str | None = None  # "3 of 4 tests passed", "exit status 1"
    peak_mb: float | None = None
    memory_limit_mb: float | None = None
    time_exceeded_at_s: float | None = None
    milestones: tuple[Milestone, ...] = ()
    sync_waits: tuple[SyncWait, ...] = ()
    series: tuple[SeriesPoint, ...] = ()
    # Tokens and cost at each milestone (the checkpoint rows in Postgres): what the charts
    # draw over time when the instance recorded no series.
    checkpoints: tuple[SeriesPoint, ...] = ()
    has_scenario: bool = False

    @property
    def work_s(self) -> float:
        """Its own working time: the duration less barrier waits and pauses."""
        return max(0.0, self.duration_s - self.wait_s - self.paused_s)

    @property
    def group(self) -> str:
        """The scenario it belongs to: its difficulty, else its own name."""
        return self.difficulty or self.name


@dataclass(frozen=True, slots=True)
class RunFacts:
    orchestration_id: str
    status: str | None = None
    started_at: str | None = None
    duration_s: float | None = None
    instances: tuple[InstanceFacts, ...] = field(default_factory=tuple)

    @property
    def has_scenarios(self) -> bool:
        return any(i.has_scenario for i in self.instances)


# ------------------------------------------------------------------ reading values


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_NUMBER_TYPES = frozenset({int, float})  # exact types: a bool is not a number here


def _number(obj: Mapping[str, Any], key: str, path: str, *, default: float | None = None) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if type(value) not in _NUMBER_TYPES:
        raise ReportInputError(f"{_where(path, key)} = {value!r}: not a number")
    if not math.isfinite(value):
        raise ReportInputError(f"{_where(path, key)} = {value!r}: not a finite number")
    return value


def _loose_number(value: Any) -> float | None:
    """A scenario field that may be a number, a numeric string ("0.85") or a label."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip().rstrip("%"))
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        return number / 100 if value.strip().endswith("%") else number
    return None


def _mapping(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReportInputError(f"{_where(path, key)}: not an object ({type(value).__name__})")
    return value


def _list(obj: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ReportInputError(f"{_where(path, key)}: not a list ({type(value).__name__})")
    return value


def _text(obj: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ReportInputError(f"{_where(path, key)} = {value!r}: not a string")
    return value


def _epoch(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str):
        raise ReportInputError(f"{path} = {value!r}: not an ISO 8601 time")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ReportInputError(f"{path} = {value!r}: not an ISO 8601 time") from None


# ------------------------------------------------------------------ measures


@dataclass(frozen=True, slots=True)
class Measures:
    quality: float | None = None
    expected: float | None = None
    met: bool | None = None
    source: str | None = None
    detail: str | None = None
    peak_mb: float | None = None
    limit_mb: float | None = None
    time_exceeded_at_s: float | None = None
    series: tuple[SeriesPoint, ...] = ()


def read_measures(measures: Mapping[str, Any] | None, path: str) -> Measures:
    """The ``measures`` block of one instance (every part optional)."""
    if not measures:
        return Measures()
    quality = _mapping(measures, "quality", path)
    q_path = _where(path, "quality")
    score = expected = None
    met: bool | None = None
    source = detail = None
    if quality is not None:
        score = _number(quality, "score", q_path)
        expected = _number(quality, "expected", q_path)
        raw_met = quality.get("met")
        if raw_met is not None and not isinstance(raw_met, bool):
            raise ReportInputError(f"{q_path}.met = {raw_met!r}: not true/false")
        met = raw_met
        source = _text(quality, "source", q_path) or None
        detail = _quality_detail(quality, q_path)
    memory = _mapping(measures, "memory", path) or {}
    m_path = _where(path, "memory")
    budget = _mapping(measures, "time_budget", path) or {}
    series = []
    for k, point in enumerate(_list(measures, "series", path)):
        p_path = f"{path}.series[{k}]"
        if not isinstance(point, list) or len(point) < 2:
            raise ReportInputError(f"{p_path} = {point!r}: not [t_s, tokens, cost, rss, pct]")
        values = [*point, None, None, None, None][:5]
        for j, v in enumerate(values):
            if v is not None and type(v) not in _NUMBER_TYPES:
                raise ReportInputError(f"{p_path}[{j}] = {v!r}: not a number")
        if values[0] is None:
            raise ReportInputError(f"{p_path}[0]: the time is missing")
        series.append(SeriesPoint(float(values[0]), *values[1:]))
    return Measures(
        quality=score,
        expected=expected,
        met=met,
        source=source,
        detail=detail,
        peak_mb=_number(memory, "peak_mb", m_path),
        limit_mb=_number(memory, "limit_mb", m_path),
        time_exceeded_at_s=_number(budget, "exceeded_at_s", _where(path, "time_budget")),
        series=tuple(series),
    )


def _quality_detail(quality: Mapping[str, Any], path: str) -> str | None:
    verify = _mapping(quality, "verify", path) or {}
    junit = _mapping(verify, "junit", _where(path, "verify"))
    if junit:
        tests = int(_number(junit, "tests", path, default=0))
        bad = int(_number(junit, "failures", path, default=0)) + int(
            _number(junit, "errors", path, default=0)
        )
        skipped = int(_number(junit, "skipped", path, default=0))
        return f"{tests - bad - skipped} of {tests - skipped} tests passed"
    if verify.get("timed_out") is True:
        return "verify timed out"
    if quality.get("source") == "exit_status" and verify.get("exit_code") is not None:
        return f"verify exit status {verify.get('exit_code')}"
    return None


# ------------------------------------------------------------------ from a results document


def facts_from_results(results: Any) -> RunFacts:
    """A results document (as written by ``coordinator run``) as RunFacts."""
    if not isinstance(results, Mapping):
        raise ReportInputError(f"not a results document: a {type(results).__name__}")
    orch_id = results.get("orchestration_id")
    if not isinstance(orch_id, str) or not orch_id:
        raise ReportInputError(f"orchestration_id = {orch_id!r}: not a results document")
    if not isinstance(results.get("instances"), list):
        raise ReportInputError("instances: missing or not a list: not a results document")
    run_start = _epoch(results.get("started_at"), "started_at")
    release = _releases(results)
    instances = []
    for k, inst in enumerate(results["instances"]):
        path = f"instances[{k}]"
        if not isinstance(inst, dict):
            raise ReportInputError(f"{path}: not an object")
        instances.append(instance_from_result(inst, path, run_start, release))
    status = results.get("status")
    if status is None and results.get("exit_code") is not None:
        status = "interrupted" if results.get("interrupted") else "finished"
    return RunFacts(
        orchestration_id=orch_id,
        status=str(status) if status is not None else None,
        started_at=_text(results, "started_at", "") or None,
        duration_s=_number(results, "duration_s", ""),
        instances=tuple(instances),
    )


def _releases(results: Mapping[str, Any]) -> dict[str, float]:
    """When each barrier point was released (epoch seconds), from the sync section."""
    sync = results.get("sync")
    out: dict[str, float] = {}
    if not isinstance(sync, Mapping):
        return out
    for k, point in enumerate(sync.get("points") or ()):
        if isinstance(point, Mapping) and isinstance(point.get("point"), str):
            at = _epoch(point.get("released_at"), f"sync.points[{k}].released_at")
            if at is not None:
                out[point["point"]] = at
    return out


def instance_from_result(
    inst: Mapping[str, Any],
    path: str,
    run_start: float | None,
    release: Mapping[str, float] | None = None,
) -> InstanceFacts:
    name = _text(inst, "name", path)
    if not name:
        raise ReportInputError(f"{path}.name: missing")
    scenario = _mapping(inst, "scenario", path) or {}
    s_path = f"{path}.scenario"
    measures = read_measures(_mapping(inst, "measures", path), f"{path}.measures")
    started = _epoch(inst.get("started_at"), f"{path}.started_at")
    start_s = started - run_start if started is not None and run_start is not None else None

    def since_run(at: Any, where: str) -> float | None:
        epoch = _epoch(at, where)
        return epoch - run_start if epoch is not None and run_start is not None else None

    milestones = []
    for k, hit in enumerate(_list(inst, "milestones", path)):
        if not isinstance(hit, dict):
            raise ReportInputError(f"{path}.milestones[{k}]: not an object")
        m_path = f"{path}.milestones[{k}]"
        at_s = since_run(hit.get("at"), f"{m_path}.at")
        if at_s is None and start_s is not None and hit.get("elapsed_s") is not None:
            at_s = start_s + float(_number(hit, "elapsed_s", m_path))
        milestones.append(Milestone(float(_number(hit, "pct", m_path, default=0.0)), at_s))
    waits = []
    for k, wait in enumerate(_list(inst, "sync_waits", path)):
        if not isinstance(wait, dict):
            raise ReportInputError(f"{path}.sync_waits[{k}]: not an object")
        w_path = f"{path}.sync_waits[{k}]"
        point = _text(wait, "point", w_path)
        waited = float(_number(wait, "waited_s", w_path, default=0.0))
        waits.append(
            SyncWait(
                point,
                waited,
                bool(wait.get("timed_out")),
                _wait_start(point, waited, milestones, release or {}, run_start),
            )
        )
    tool_calls = _mapping(inst, "tool_calls", path) or {}
    expected = measures.expected
    if expected is None:
        expected = _loose_number(scenario.get("expected_quality"))
    met = measures.met
    if met is None and measures.quality is not None and expected is not None:
        met = measures.quality >= expected
    return InstanceFacts(
        name=name,
        status=_text(inst, "status", path, "unknown"),
        description=_text(inst, "description", path),
        difficulty=(str(scenario["difficulty"]) if scenario.get("difficulty") else None),
        complexity_multiplier=_loose_number(scenario.get("complexity_multiplier")),
        input_size=_loose_number(scenario.get("input_size")),
        time_budget_s=_number(scenario, "time_budget_seconds", s_path),
        expected_quality=expected,
        total_tokens=int(_number(inst, "total_tokens", path, default=0)),
        cost_usd=float(_number(inst, "total_cost_usd", path, default=0.0)),
        duration_s=float(_number(inst, "duration_s", path, default=0.0)),
        wait_s=float(_number(inst, "wait_s", path, default=0.0)),
        paused_s=float(_number(inst, "paused_s", path, default=0.0)),
        progress_pct=float(_number(inst, "progress_pct", path, default=0.0)),
        start_s=start_s,
        tool_calls=sum(int(v) for v in tool_calls.values() if isinstance(v, int)),
        quality=measures.quality,
        quality_met=met,
        quality_source=measures.source,
        quality_detail=measures.detail,
        peak_mb=measures.peak_mb,
        memory_limit_mb=measures.limit_mb,
        time_exceeded_at_s=measures.time_exceeded_at_s,
        milestones=tuple(milestones),
        sync_waits=tuple(waits),
        series=measures.series,
        has_scenario=bool(scenario),
    )


def _wait_start(
    point: str,
    waited_s: float,
    milestones: Sequence[Milestone],
    release: Mapping[str, float],
    run_start: float | None,
) -> float | None:
    """Where a barrier wait sits on the run's clock: it ended when the point was released,
    else it began when the instance reached the milestone."""
    if run_start is not None and point in release:
        return release[point] - run_start - waited_s
    if point.startswith("milestone:"):
        try:
            pct = float(point.split(":", 1)[1])
        except ValueError:
            return None
        for hit in milestones:
            if hit.pct == pct and hit.at_s is not None:
                return hit.at_s
    return None
