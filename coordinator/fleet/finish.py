"""The end of a submitted run: once every instance row has ended, the results (the same
document a one-host run writes, from the rows) and the orchestration's final status."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from coordinator.barrier import PostgresBarrier, timeouts_of
from coordinator.config.models import SyncMode
from coordinator.control.resume import seed_state
from coordinator.db.postgres import PostgresStore
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.sync import SyncDriver
from coordinator.fleet.plans import StoredRun
from coordinator.fleet.rules import UNFINISHED
from coordinator.fleet.store import FleetDb
from coordinator.results import build_results


@dataclass(frozen=True, slots=True)
class RunState:
    ended: bool
    open_names: tuple[str, ...]  # instances that have not ended yet
    results: dict[str, Any]
    status: str  # completed | failed


async def run_state(store: PostgresStore, fleet: FleetDb, run: StoredRun) -> RunState:
    rows = {r.name: r for r in await store.list_instances(run.row.id)}
    names = [i.name for i in run.plan.instances]
    open_names = tuple(n for n in names if n not in rows or rows[n].status in UNFINISHED)
    # The engine's own states, seeded from the rows: the results are built as a run's are.
    orch = Orchestrator(
        run.plan, base_env={}, limits=Limits(), guardian=False, handle_signals=False
    )
    for name, state in orch.states.items():
        seed_state(state, rows.get(name), relaunch=False)
        orch.budgets.update(name, state.accountant.usage, state.accountant.cost_usd)
    if not open_names:  # the results' sync section, as a one-host run's: from the barrier
        orch.sync = await _sync_of(store, run, orch)
    started = [r.started_at.timestamp() for r in rows.values() if r.started_at is not None]
    ended = [r.ended_at.timestamp() for r in rows.values() if r.ended_at is not None]
    outcome = orch.outcome()
    outcome = dataclasses.replace(
        outcome,
        started_unix=min(started, default=outcome.started_unix),
        ended_unix=max(ended, default=outcome.ended_unix),
    )
    results = build_results(run.plan, outcome)
    results["runners"] = [r.as_dict() for r in await fleet.runners_of(run.row.id)]
    return RunState(
        ended=not open_names,
        open_names=open_names,
        results=results,
        status="completed" if outcome.exit_code == 0 else "failed",
    )


async def finish_if_ended(store: PostgresStore, fleet: FleetDb, run: StoredRun) -> bool:
    """Close the orchestration once every instance ended (the first caller does). Cheap
    while instances are open: one count, not the results."""
    if await fleet.open_instances(run.row.id, sorted(UNFINISHED)) != 0:
        return False
    state = await run_state(store, fleet, run)
    if not state.ended:
        return False
    await fleet.finish_open(run.row.id, state.status, state.results)
    return True


async def _sync_of(store: PostgresStore, run: StoredRun, orch: Orchestrator) -> SyncDriver | None:
    """The barrier's points as recorded by every runner (none for sync mode free)."""
    plan = run.plan
    if plan.sync.mode is SyncMode.FREE:
        return None
    barrier = await PostgresBarrier.open(
        "",  # no listener: only read, on the store's pool
        run.row.id,
        mode=plan.sync.mode.value,
        participants=[i.name for i in plan.instances],
        timeout_s=plan.sync.timeout_s,
        listen=False,
        pool=store.pool,
        run_migrations=False,
    )
    try:
        driver = SyncDriver(
            plan, barrier, states=orch.states, note=orch.notes.append, run_of=orch.runs.get
        )
        await driver.refresh()
        driver.timeouts = timeouts_of(driver.points)
    finally:
        await barrier.close()
    return driver
