"""The flow behind ``coordinator resume``: read the stored run, take it over, launch what
did not complete as new attempts, and finish it like any run (results, rows, status)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from coordinator import app
from coordinator.config.direct import DirectCommand
from coordinator.config.models import BudgetMode, BudgetType, PermissionMode, SyncMode
from coordinator.control.resume import check_owner, choose, seed_state
from coordinator.db.journal import replay_journals
from coordinator.engine.orchestrator import Orchestrator
from coordinator.errors import DatabaseError, PreflightError, UsageError
from coordinator.fleet.store import FleetDb
from coordinator.plan import RunOptions, RunPlan
from coordinator.settings import Settings


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    orchestration_id: str | None = None
    instances: tuple[str, ...] = ()
    include_blocked: bool = False
    config_path: Path | None = None  # else the one the run was launched with
    database_url: str | None = None
    max_attempts: int | None = None
    quiet: bool = False
    json_output: bool = False


def run_request(launch: dict[str, Any], rr: ResumeRequest, orchestration_id: str) -> app.RunRequest:
    """The run's own request again, from what the database kept of its launch."""
    opts: dict[str, Any] = launch.get("options") or {}
    flags: dict[str, Any] = launch.get("flags") or {}
    options = RunOptions(
        orchestration_id=orchestration_id,
        workspace=Path(opts["workspace"]) if opts.get("workspace") else None,
        startup_delay=opts.get("startup_delay"),
        timeout=opts.get("timeout"),
        idle_timeout=opts.get("idle_timeout"),
        status_report_interval=opts.get("status_report_interval"),
        overall_token_budget=opts.get("overall_token_budget"),
        command_budgets=dict(opts.get("command_budgets") or {}),
        overall_cost_budget=opts.get("overall_cost_budget"),
        command_cost_budgets=dict(opts.get("command_cost_budgets") or {}),
        budget_mode=BudgetMode(opts["budget_mode"]) if opts.get("budget_mode") else None,
        sync_mode=SyncMode(opts["sync_mode"]) if opts.get("sync_mode") else None,
        permission_mode=(
            PermissionMode(opts["permission_mode"]) if opts.get("permission_mode") else None
        ),
        max_attempts=rr.max_attempts or opts.get("max_attempts"),
        budget_type=BudgetType(opts["budget_type"]) if opts.get("budget_type") else None,
        output_format=opts.get("output_format"),
    )
    return app.RunRequest(
        config_path=rr.config_path
        or (Path(launch["config_path"]) if launch.get("config_path") else None),
        options=options,
        output=Path(launch["output"]) if launch.get("output") else None,
        json_output=rr.json_output,
        claude_bin=flags.get("claude_bin"),
        database_url=rr.database_url,
        offline=bool(flags.get("offline")),
        offline_script=Path(flags["offline_script"]) if flags.get("offline_script") else None,
        quiet=rr.quiet,
        max_line_bytes=flags.get("max_line_bytes"),
        skip_command_check=bool(flags.get("skip_command_check")),
        budget_visuals=bool(flags.get("budget_visuals", True)),
        direct=DirectCommand.from_record(launch["direct"]) if launch.get("direct") else None,
    )


def restagger(plan: RunPlan, names: tuple[str, ...]) -> RunPlan:
    """The relaunched instances keep the run's stagger among themselves, from now."""
    order = {name: i for i, name in enumerate(names)}
    instances = tuple(
        dataclasses.replace(inst, offset_s=order.get(inst.name, 0) * plan.startup_delay)
        for inst in plan.instances
    )
    return dataclasses.replace(plan, instances=instances)


async def resume(rr: ResumeRequest, settings: Settings, console: Console) -> int:
    from coordinator.db import open_store, resolve_dsn

    try:
        resolved = await asyncio.to_thread(resolve_dsn, settings.database_dsn(rr.database_url))
        store = await open_store(resolved.dsn)
    except DatabaseError as exc:
        raise PreflightError(f"database: {exc} (a resume needs the run's database)") from None
    handed_over = False
    try:
        for line in await replay_journals(store, app.state_dir_of(settings)):
            console.print(line, highlight=False)
        orch_id = rr.orchestration_id or await store.latest_orchestration_id()
        if orch_id is None:
            raise UsageError("no orchestration recorded in this database yet")
        row = await store.get_orchestration(orch_id)
        if row is None:
            raise UsageError(f"orchestration {orch_id!r} not found in {resolved.masked}")
        check_owner(row)
        if await FleetDb(store.pool).fleet_kind(orch_id) is not None:
            raise UsageError(
                f"orchestration {orch_id} is a fleet run: its runners carry its instances on "
                "(start `coordinator runner` on any host); resume is for one-host runs"
            )
        if not row.launch:
            raise UsageError(
                f"orchestration {orch_id} was recorded by a coordinator without resume: "
                "it cannot be resumed"
            )
        rows = {r.name: r for r in await store.list_instances(orch_id)}
        req = run_request(row.launch, rr, orch_id)
        cwd = Path(row.launch.get("cwd") or ".")
        try:
            os.chdir(cwd)  # the run's relative paths (workspaces, flags) meant this directory
        except OSError as exc:
            raise UsageError(
                f"the run's working directory {cwd}: {exc.strerror or exc}; cannot resume it"
            ) from None
        plan = app.make_plan(req, settings, need_claude=True)
        choice = choose(
            [i.name for i in plan.instances], rows, rr.instances, include_blocked=rr.include_blocked
        )
        for name, why in choice.why_not.items():
            console.print(f"{name}: not resumed ({why})", highlight=False)
        if not choice.relaunch:
            console.print(f"{orch_id}: nothing to resume", highlight=False)
            return 0
        warnings = app.preflight(plan, req, os.environ, state_dir=app.state_dir_of(settings))
        taken = await store.reopen_orchestration(orch_id, socket.gethostname(), settings.lease_s)
        if taken is None:
            raise UsageError(f"orchestration {orch_id} was taken over by another coordinator")
        app.say_warnings(warnings)
        console.print(
            f"{orch_id}: resuming {', '.join(choice.relaunch)}", highlight=False, soft_wrap=True
        )
        relaunch = set(choice.relaunch)

        def prepare(orch: Orchestrator) -> None:
            for name, state in orch.states.items():
                seed_state(state, rows.get(name), relaunch=name in relaunch)
                acct = state.accountant
                orch.budgets.update(name, acct.usage, acct.cost_usd)

        db = app.RunDatabase(store, resolved.dsn, resolved.masked)
        output = req.output or Path(f"coordinator-results-{orch_id}.json")
        handed_over = True  # from here the run closes the store on every path
        return await app.execute(
            restagger(plan, choice.relaunch),
            req,
            settings,
            console,
            db,
            output,
            reopened=taken,
            prepare=prepare,
        )
    finally:
        if not handed_over:
            await store.close()
