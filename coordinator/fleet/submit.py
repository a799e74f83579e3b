"""``coordinator submit``: check a run as ``run`` would, record it, and queue one job per
instance (the stagger and ``--start-at`` become not-before times) for runners on any host;
``--wait`` stays until every instance ended and writes the results. ``coordinator results``
writes them on demand."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from rich.console import Console

from coordinator import app
from coordinator.barrier import open_barrier
from coordinator.config.models import SyncMode
from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import InstanceRow, OrchestrationRow
from coordinator.errors import UsageError
from coordinator.fleet.finish import run_state
from coordinator.fleet.plans import StoredRun, labels_of, stored_run
from coordinator.fleet.queue import PgQueue, QueuedJob, install_queue
from coordinator.fleet.rules import JobPayload, entrypoint_for, hosted_entrypoint, not_before_s
from coordinator.fleet.store import FleetDb
from coordinator.redact import mask_config
from coordinator.report.section import end_of_run_table
from coordinator.results import default_output_path
from coordinator.settings import Settings
from runner import aio

WAIT_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class Queued:
    """A run recorded and queued: its database, its stored run, where its results go."""

    db: app.RunDatabase
    run: StoredRun
    output: Path
    entrypoints: tuple[str, ...]  # the queues its jobs are on


async def record_and_queue(
    req: app.RunRequest, settings: Settings, console: Console, *, kind: str
) -> Queued:
    """Check the run as ``run`` does, record it (``queued``, one ``pending`` row per
    instance, its barrier with every instance) and queue one job per instance: on the
    label queues every runner serves (``submitted``), or on queues of the run's own that
    its process's runner and the runners that join serve (``hosted``, ``run --fleet``).
    The caller closes ``db.store``."""
    if req.no_database or settings.no_database:
        what = "submit" if kind == "submitted" else "run --fleet"
        raise UsageError(f"{what} needs a database: the runners claim instances from it")
    plan = app.make_plan(req, settings, need_claude=True)
    for warning in app.preflight(plan, req, os.environ, state_dir=app.state_dir_of(settings)):
        console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
    db = await app.check_database(req, settings, plan, lambda line: console.print(line))
    assert db is not None
    try:
        await install_queue(db.dsn)
        output = (req.output or default_output_path(plan, datetime.now())).absolute()
        row = OrchestrationRow(
            id=plan.orchestration_id,
            status="queued",
            host=socket.gethostname(),
            sync_mode=plan.sync.mode.value,
            config=mask_config(plan.config.model_dump(mode="json")),
            budgets=plan.budget.model_dump(mode="json"),
            lease_s=settings.lease_s,
            launch=app.launch_of(req, output),
        )
        created = await db.store.create_orchestration(row)
        labels = labels_of(plan)
        queue_of = {
            i.name: hosted_entrypoint(labels[i.name], plan.orchestration_id)
            if kind == "hosted"
            else entrypoint_for(labels[i.name])
            for i in plan.instances
        }
        entrypoints = tuple(sorted(set(queue_of.values())))
        await FleetDb(db.store.pool).mark_fleet(
            plan.orchestration_id, kind, entrypoints if kind == "hosted" else ()
        )
        await db.store.upsert_instances(
            [
                InstanceRow(plan.orchestration_id, i.name, "pending", session_id=i.session_id)
                for i in plan.instances
            ]
        )
        if plan.sync.mode is not SyncMode.FREE:  # every instance takes part, wherever it runs
            barrier = await open_barrier(
                plan.sync.mode,
                plan.orchestration_id,
                db.dsn,
                participants=[i.name for i in plan.instances],
                timeout_s=plan.sync.timeout_s,
                lease_s=settings.lease_s,
            )
            await barrier.close()
        start_in = plan.start_at.timestamp() - time.time() if plan.start_at is not None else 0.0
        queue = await PgQueue.open(db.dsn, listen=False)
        try:
            await queue.enqueue(
                [
                    QueuedJob(
                        queue_of[i.name],
                        JobPayload(plan.orchestration_id, i.name),
                        not_before_s(i.offset_s, start_in),
                    )
                    for i in plan.instances
                ]
            )
        finally:
            await queue.close()
    except BaseException:
        await db.store.close()
        raise
    return Queued(db, StoredRun(created, req, plan, labels), output, entrypoints)


async def submit(req: app.RunRequest, settings: Settings, console: Console, *, wait: bool) -> int:
    queued = await record_and_queue(req, settings, console, kind="submitted")
    plan = queued.run.plan
    try:
        print(plan.orchestration_id, flush=True)
        if plan.start_at is not None:
            console.print(f"queued; due from {plan.start_at.isoformat()}", highlight=False)
        if not wait:
            return 0
        return await wait_and_write(queued.db.store, queued.run, queued.output, console, settings)
    finally:
        await queued.db.store.close()


async def wait_and_write(
    store: PostgresStore,
    run: StoredRun,
    output: Path,
    console: Console,
    settings: Settings,
    *,
    handle_signals: bool = True,
) -> int:
    """Until every instance ended (Ctrl-C stops waiting, not the run, unless the caller
    handles signals itself), then the results."""
    fleet = FleetDb(store.pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        while True:
            state = await run_state(store, fleet, run)
            if state.ended:
                break
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(stop.wait(), WAIT_POLL_S)
            if stop.is_set():
                console.print(
                    f"{run.row.id}: stopped waiting; its instances go on on the runners "
                    f"(coordinator results {run.row.id} --output FILE later)",
                    highlight=False,
                )
                return 130
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return await _write(fleet, run, state.results, state.status, output, console, settings)


async def _write(
    fleet: FleetDb,
    run: StoredRun,
    results: dict[str, object],
    status: str,
    output: Path,
    console: Console,
    settings: Settings,
) -> int:
    await fleet.finish_open(run.row.id, status, dict(results))
    where = app.save_results(output, dict(results), app.state_dir_of(settings), console)
    if run.req.json_output:  # as a one-host run ends: the document on stdout
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
        sys.stdout.flush()
    if not run.req.quiet and (table := end_of_run_table(results)) is not None:
        console.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in dict(results["counts"]).items() if v)  # type: ignore[call-overload]
    console.print(
        f"{run.row.id}: {counts}; results: {where or 'not written (see above)'}",
        highlight=False,
        soft_wrap=True,
    )
    return 0 if status == "completed" else 1


async def results(
    store: PostgresStore,
    console: Console,
    settings: Settings,
    orchestration_id: str | None,
    output: Path | None,
    *,
    wait: bool,
    database_url: str | None,
) -> int:
    """``coordinator results``: the results of a submitted run, once every instance ended."""
    orch_id = orchestration_id or await store.latest_orchestration_id()
    if orch_id is None:
        raise UsageError("no orchestration recorded in this database yet")
    row = await store.get_orchestration(orch_id)
    if row is None:
        raise UsageError(f"orchestration {orch_id!r} not found")
    run = stored_run(row, settings, database_url, need_claude=False)
    target = (output or run.req.output or Path(f"coordinator-results-{orch_id}.json")).absolute()
    if wait:
        return await wait_and_write(store, run, target, console, settings)
    fleet = FleetDb(store.pool)
    state = await run_state(store, fleet, run)
    if not state.ended:
        raise UsageError(
            f"orchestration {orch_id}: {len(state.open_names)} instance(s) have not ended yet "
            f"({', '.join(state.open_names[:5])}); --wait to wait for them"
        )
    return await _write(fleet, run, state.results, state.status, target, console, settings)
