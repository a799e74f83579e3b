"""The results JSON written at the end of every run (also after Ctrl-C)."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from coordinator.engine.orchestrator import RunOutcome
from coordinator.engine.state import InstanceState, Status
from coordinator.plan import RunPlan
from coordinator.report.section import comparison_section
from runner.events import RateLimit

SCHEMA_VERSION = 1


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def instance_result(state: InstanceState) -> dict[str, Any]:
    acct = state.accountant
    usage = acct.usage
    plan = state.plan
    return {
        "name": state.name,
        "description": plan.description,
        "command": plan.command,
        "status": state.status.value,
        "reason": state.reason,
        "session_id": plan.session_id,
        "session_source": plan.session_source,
        "pid": state.pid,
        "exit_code": state.exit_code,
        "started_at": iso(state.started_unix),
        "ended_at": iso(state.ended_unix),
        "duration_s": round(state.duration_s(), 3),
        "wait_s": round(state.waiting_s(), 3),
        "paused_s": round(state.pausing_s(), 3),
        "sync_waits": [
            {"point": point, "waited_s": waited, "timed_out": timed_out}
            for point, waited, timed_out in state.sync_waits
        ],
        **usage.as_dict(),
        "total_cost_usd": round(acct.cost_usd, 6),
        "cost_is_estimate": acct.cost_is_estimate,
        "tool_calls": dict(sorted(acct.tool_calls.items())),
        "turns": acct.num_turns or acct.messages,
        "api_messages": acct.messages,
        "results": acct.results,
        "permission_denials": dict(acct.permission_denials),
        "api_retries": dict(acct.api_retries),
        "attempts": state.attempts,
        "attempt_log": [record.as_dict() for record in state.attempt_log],
        "retry_at": iso(state.retry_at_unix),
        "progress_pct": round(state.progress.pct, 1),
        "milestones": [
            {"pct": h.pct, "at": iso(h.at_unix_ms / 1000), "elapsed_s": round(h.elapsed_s, 3)}
            for h in state.milestone_hits
        ],
        "budget_warnings": list(state.budget_notes),
        "error": state.error,
        "stderr_tail": list(state.stderr_tail)[-5:],
        "lines": state.lines,
        "skipped_lines": state.skipped_lines,
        "claude_code_version": state.init_version,
        "rate_limit": rate_limit_result(state.rate_limit),
        "scenario": plan.scenario.model_dump() if plan.scenario else None,
        "measures": state.measures(),
    }


def rate_limit_result(event: RateLimit | None) -> dict[str, Any] | None:
    """The latest account usage-limit state an instance saw, None if it saw none."""
    if event is None:
        return None
    return {
        "status": event.status,
        "resets_at": iso(event.resets_at),
        "type": event.limit_type,
        "utilization": event.utilization,
        "windows": {
            name: window.utilization
            for name, window in event.windows.items()
            if window.utilization is not None
        },
        "using_overage": event.using_overage,
    }


def build_results(plan: RunPlan, outcome: RunOutcome) -> dict[str, Any]:
    instances = [instance_result(s) for s in outcome.states]
    by_status: dict[str, int] = {s.value: 0 for s in Status if s is not Status.STARTING}
    for inst in instances:
        by_status[inst["status"]] = by_status.get(inst["status"], 0) + 1
    totals = {
        k: sum(int(i[k]) for i in instances)
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_creation_tokens",
            "total_tokens",
        )
    }
    cacheable = (
        totals["input_tokens"] + totals["cache_read_tokens"] + totals["cache_creation_tokens"]
    )
    doc = {
        "schema_version": SCHEMA_VERSION,
        "orchestration_id": plan.orchestration_id,
        "config": plan.config_source,
        "started_at": iso(outcome.started_unix),
        "ended_at": iso(outcome.ended_unix),
        "duration_s": round(outcome.ended_unix - outcome.started_unix, 3),
        "interrupted": outcome.interrupted,
        "exit_code": outcome.exit_code,
        "counts": {k: v for k, v in by_status.items() if v},
        "sync_mode": plan.sync.mode.value,
        "sync": outcome.sync,
        "pool": outcome.pool,
        "totals": {
            **totals,
            "total_cost_usd": round(sum(i["total_cost_usd"] for i in instances), 6),
            "tool_calls": sum(sum(i["tool_calls"].values()) for i in instances),
            "cache_hit_rate": round(totals["cache_read_tokens"] / cacheable, 4)
            if cacheable
            else 0.0,
        },
        "budget": {
            "mode": plan.budget.mode.value,
            "count_cache_reads": plan.budget.count_cache_reads,
            "budgets": [b.as_dict() for b in outcome.budgets.budgets],
        },
        "sessions": {i.name: i.session_id for i in plan.instances},
        "notes": outcome.notes,
        "instances": instances,
    }
    doc["comparison"] = comparison_section(doc)  # last: it reads the document above
    return doc


def default_output_path(plan: RunPlan, now: datetime) -> Path:
    return Path(f"coordinator-results-{now:%Y%m%d-%H%M%S}-{plan.orchestration_id}.json")


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Atomic write: a crash mid-write never leaves a half file where the results were."""
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
            fh.write(b"\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
