"""Where a report's run comes from: a results file, or Postgres (any host). A finished run's
stored results are the same document as its file; a run still going (or lost) is read
from its instance rows (their ``measures``, migration 007), checkpoints and config."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from coordinator.db.postgres import PostgresStore, database_errors, load_queries
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.errors import UsageError
from coordinator.report.facts import (
    InstanceFacts,
    ReportInputError,
    RunFacts,
    SeriesPoint,
    facts_from_results,
    instance_from_result,
)
from coordinator.status.from_db import resolve_id

QUERIES_FILE = Path(__file__).with_name("queries.sql")
MAX_RESULTS_BYTES = 512 * 1024 * 1024


def _query(name: str) -> str:
    return load_queries(QUERIES_FILE)[name]


def read_results_file(path: Path) -> dict[str, Any]:
    """The results document in ``path``; any problem is one line naming the file."""
    try:
        if path.stat().st_size > MAX_RESULTS_BYTES:
            raise ReportInputError(f"results file {path}: larger than 512 MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise ReportInputError(f"results file {path}: {exc.strerror or exc}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReportInputError(f"results file {path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ReportInputError(f"results file {path}: not a results document")
    return doc


def facts_from_file(path: Path) -> RunFacts:
    doc = read_results_file(path)
    try:
        return facts_from_results(doc)
    except ReportInputError as exc:
        raise ReportInputError(f"results file {path}: {exc}") from None


async def facts_from_store(
    store: PostgresStore, orchestration_id: str | None, *, over_time: bool = True
) -> RunFacts:
    """The run ``orchestration_id`` (default: the newest). ``over_time``: also the tokens
    and cost at each checkpoint, which only the charts draw (the comparison needs none)."""
    orch_id = await resolve_id(store, orchestration_id)
    orch = await store.get_orchestration(orch_id)
    if orch is None:
        raise UsageError(f"orchestration {orch_id!r} not found in the database")
    results = orch.results or {}
    if isinstance(results.get("instances"), list):
        try:
            run = facts_from_results(results)
        except ReportInputError as exc:
            raise ReportInputError(f"orchestration {orch_id}: stored results: {exc}") from None
        if run.status is None or run.status == "finished":
            run = replace(run, status=orch.status)
    else:
        instances = await store.list_instances(orch_id)
        measures = {row.name: row.measures for row in instances if row.measures}
        checkpoints = await store.list_checkpoints(orch_id)
        try:
            run = facts_from_rows(orch, instances, checkpoints, measures)
        except ReportInputError as exc:
            raise ReportInputError(f"orchestration {orch_id}: {exc}") from None
    if over_time:
        run = with_points(run, await checkpoint_points(store, orch_id))
    return run


Point = tuple[str, float, int, dict[str, Any]]  # scenario_id, pct, epoch ms, metrics


async def checkpoint_points(store: PostgresStore, orch_id: str) -> list[Point]:
    with database_errors("read checkpoints"):
        records = await store.pool.fetch(_query("checkpoint_points"), orch_id)
    return [
        (r["scenario_id"], r["progress_pct"], r["timestamp_unix"], r["metrics"]) for r in records
    ]


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def facts_from_rows(
    orch: OrchestrationRow,
    rows: list[InstanceRow],
    checkpoints: list[CheckpointRow],
    measures: dict[str, Any],
) -> RunFacts:
    """A run without stored results (still going, or its coordinator lost): the figures
    of its instance rows, milestones from its checkpoints, scenarios from its config."""
    scenarios = {
        inst.get("name"): inst.get("scenario")
        for inst in (orch.config.get("instances") or [])
        if isinstance(inst, dict)
    }
    descriptions = {
        inst.get("name"): inst.get("description") or ""
        for inst in (orch.config.get("instances") or [])
        if isinstance(inst, dict)
    }
    run_start = orch.started_at
    by_name: dict[str, list[CheckpointRow]] = {}
    for cp in checkpoints:
        by_name.setdefault(cp.scenario_id, []).append(cp)
    instances: list[InstanceFacts] = []
    for k, row in enumerate(rows):
        end = row.ended_at or orch.ended_at or orch.last_seen_at or row.updated_at
        duration = (end - row.started_at).total_seconds() if end and row.started_at else 0.0
        doc = {
            "name": row.name,
            "status": row.status,
            "description": descriptions.get(row.name, ""),
            "started_at": _iso(row.started_at),
            "duration_s": max(0.0, duration),
            "wait_s": row.wait_s,
            "total_tokens": row.total_tokens,
            "total_cost_usd": row.cost_usd,
            "tool_calls": row.tool_calls,
            "progress_pct": row.progress_pct or 0.0,
            "milestones": [
                {"pct": cp.progress_pct, "at": _iso_ms(cp.timestamp_unix)}
                for cp in by_name.get(row.name, [])
                if cp.milestone_name not in ("started", "completed")
            ],
            "scenario": scenarios.get(row.name),
            "measures": measures.get(row.name),
        }
        instances.append(instance_from_result(doc, f"instances[{k}]", _epoch(run_start)))
    run_end = orch.ended_at or orch.last_seen_at
    return RunFacts(
        orchestration_id=orch.id,
        status=orch.status,
        started_at=_iso(run_start),
        duration_s=(run_end - run_start).total_seconds() if run_start and run_end else None,
        instances=tuple(instances),
    )


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat()


def with_points(run: RunFacts, points: list[Point]) -> RunFacts:
    """Tokens and cost at each checkpoint, per instance (seconds since its first)."""
    by_name: dict[str, list[Point]] = {}
    for point in points:
        by_name.setdefault(point[0], []).append(point)
    out = []
    for inst in run.instances:
        rows = by_name.get(inst.name, [])
        first = rows[0][2] if rows else 0
        series = tuple(
            SeriesPoint(
                (ms - first) / 1000,
                _num(metrics.get("total_tokens")),
                _num(metrics.get("cost_usd")),
                None,
                pct,
            )
            for _, pct, ms, metrics in rows
        )
        out.append(replace(inst, checkpoints=series))
    return replace(run, instances=tuple(out))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
