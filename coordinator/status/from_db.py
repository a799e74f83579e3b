"""``coordinator status`` and ``history``: the live report's table, built from Postgres, so
any terminal or host that reaches the database can watch a run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from coordinator.barrier import PointStatus, milestone_points, render_sync_line
from coordinator.barrier.postgres import read_points
from coordinator.db.postgres import PostgresStore, database_errors
from coordinator.db.rows import InstanceRow, OrchestrationRow
from coordinator.errors import UsageError
from coordinator.redact import mask_config
from coordinator.status.render import ReportOptions, fmt_duration, render_report
from coordinator.status.rows import StatusRow

LIVE_STATUSES = {"pending", "starting", "running", "waiting", "paused", "retrying", "rate_limited"}


def row_from_db(row: InstanceRow, now: datetime) -> StatusRow:
    started = row.started_at
    end = row.ended_at or (now if row.status in LIVE_STATUSES else row.updated_at or now)
    duration = (end - started).total_seconds() if started else 0.0
    return StatusRow(
        name=row.name,
        status=row.status,
        duration_s=max(0.0, duration),
        wait_s=row.wait_s,
        total_tokens=row.total_tokens,
        cache_read_tokens=row.cache_read_tokens,
        tool_calls=sum(row.tool_calls.values()),
        cost_usd=row.cost_usd,
        cost_estimated=False,
        progress_pct=row.progress_pct or 0.0,
        last_event=row.error or row.reason or "",
        attempts=row.attempts,
    )


async def resolve_id(store: PostgresStore, orchestration_id: str | None) -> str:
    if orchestration_id:
        return orchestration_id
    latest = await store.latest_orchestration_id()
    if latest is None:
        raise UsageError("no orchestration recorded in this database yet")
    return latest


async def snapshot(store: PostgresStore, orchestration_id: str) -> dict[str, Any]:
    orch = await store.get_orchestration(orchestration_id)
    if orch is None:
        raise UsageError(f"orchestration {orchestration_id!r} not found in the database")
    instances = await store.list_instances(orchestration_id)
    progress = await store.latest_progress(orchestration_id)
    points: list[PointStatus] = []
    if orch.sync_mode != "free":
        with database_errors("read barrier points"):
            async with store.pool.acquire() as conn:
                points = await read_points(conn, orchestration_id)
    from coordinator.fleet.store import FleetDb  # several hosts: who runs its instances

    runners = await FleetDb(store.pool).runners_of(orchestration_id)
    return {
        "orchestration": orch,
        "instances": instances,
        "progress": progress,
        "sync": points,
        "runners": runners,
    }


def sync_line(orch: OrchestrationRow, points: list[PointStatus]) -> str | None:
    """The live report's sync line, from the barrier rows (any process, any host)."""
    if orch.sync_mode == "free":
        return None
    sync = (orch.config.get("orchestration") or {}).get("sync") or {}
    by_steps = any(p.point.startswith("step:") for p in points)
    planned = [] if by_steps else milestone_points(sync.get("milestones") or (30, 50, 70, 90))
    return render_sync_line(points, planned)


def lost_row(row: StatusRow) -> StatusRow:
    if row.status not in LIVE_STATUSES:
        return row
    return dataclasses.replace(row, status="lost", last_event="its coordinator stopped")


def shown_status(orch: OrchestrationRow, now: datetime) -> str:
    """``lost`` says when its coordinator was last heard of: it stopped heartbeating (it was
    killed, or its host went away) while the run was going on."""
    if orch.status != "lost" or orch.last_seen_at is None:
        return orch.status
    ago = max(0.0, (now - orch.last_seen_at).total_seconds())
    seen = orch.last_seen_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"lost: coordinator last seen {seen} ({fmt_duration(ago)} ago)"


def render_snapshot(snap: dict[str, Any]) -> Any:
    orch: OrchestrationRow = snap["orchestration"]
    now = datetime.now(UTC)
    if orch.status == "lost" and orch.last_seen_at is not None:
        # Nobody is watching its instances any more: their clocks stop at the last beat.
        rows = [lost_row(row_from_db(r, orch.last_seen_at)) for r in snap["instances"]]
    else:
        rows = [row_from_db(r, now) for r in snap["instances"]]
    started = orch.started_at or now
    elapsed = ((orch.ended_at or now) - started).total_seconds()
    return render_report(
        f"coordinator {orch.id} [{shown_status(orch, now)}] on {orch.host}",
        elapsed,
        rows,
        [],
        ReportOptions(budget_visuals=False),
        extra=[
            *([line] if (line := sync_line(orch, snap.get("sync") or [])) else []),
            *runner_lines(snap.get("runners") or []),
        ],
    )


def runner_lines(runners: list[Any]) -> list[str]:
    """One line per runner of the run: host, name, heartbeat age, capacity, what it holds."""
    return [
        f"runner {r.name} on {r.host} [{'lost' if r.lost else r.state}]: heartbeat "
        f"{fmt_duration(r.heartbeat_age_s)} ago, capacity {r.capacity}, "
        f"holds {len(r.held)}" + (f" ({', '.join(r.held)})" if r.held else "")
        for r in runners
    ]


def snapshot_json(snap: dict[str, Any]) -> str:
    def default(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            fields = {k: getattr(obj, k) for k in obj.__dataclass_fields__}
            if isinstance(obj, OrchestrationRow):  # rows written before masking existed too
                fields["config"] = mask_config(obj.config)
            return fields
        raise TypeError

    return orjson.dumps(snap, default=default, option=orjson.OPT_INDENT_2).decode()


async def status(
    store: PostgresStore,
    console: Console,
    orchestration_id: str | None,
    *,
    watch: bool,
    json_output: bool,
    interval: float = 2.0,
) -> int:
    orch_id = await resolve_id(store, orchestration_id)
    snap = await snapshot(store, orch_id)
    if json_output:
        console.print_json(snapshot_json(snap))
        return 0
    if not watch:
        console.print(render_snapshot(snap))
        return 0
    if not console.is_terminal:  # a pipe or a log: the table once per interval, as a run does
        console.print(render_snapshot(snap))
        while snap["orchestration"].status == "running":
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(interval)
            snap = await snapshot(store, orch_id)
            console.print(render_snapshot(snap))
        return 0
    with Live(render_snapshot(snap), console=console, refresh_per_second=2) as live:
        while snap["orchestration"].status == "running":  # a lost run is not watched forever
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(interval)
            snap = await snapshot(store, orch_id)
            live.update(render_snapshot(snap))
    return 0


async def history(store: PostgresStore, console: Console, limit: int, json_output: bool) -> int:
    rows = await store.list_orchestrations(limit)
    if json_output:
        console.print_json(snapshot_json({"orchestrations": rows}))
        return 0
    now = datetime.now(UTC)
    table = Table(box=None, header_style="bold")
    for col in ("orchestration", "status", "host", "sync", "started", "ended", "instances"):
        table.add_column(col)
    for row in rows:
        results = row.results or {}
        counts = results.get("counts") or {}
        table.add_row(
            row.id,
            shown_status(row, now),
            row.host,
            row.sync_mode,
            row.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if row.started_at else "",
            row.ended_at.astimezone().strftime("%H:%M:%S") if row.ended_at else "",
            ", ".join(f"{k} {v}" for k, v in counts.items()),
        )
    console.print(table)
    return 0
