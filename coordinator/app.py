"""The run flow behind ``coordinator run`` and ``--dry-run``: load, plan, validate, wait,
run, write results. The CLI module only parses flags and maps errors to exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from coordinator.budget.rules import unused_command_budgets
from coordinator.claude_bin import find_claude
from coordinator.config.loader import load_config
from coordinator.dryrun import bypass_refusal, render_json, render_text
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import STOP_SIGNALS, Orchestrator
from coordinator.engine.sink import NullSink, RunSink
from coordinator.errors import ClaudeNotFoundError, CoordinatorError, PreflightError
from coordinator.plan import PlannedInstance, RunOptions, RunPlan, build_plan
from coordinator.results import build_results, default_output_path, write_results
from coordinator.schedule import format_countdown
from coordinator.settings import Settings
from coordinator.status.live import StatusReporter, note_printer
from coordinator.status.render import ReportOptions

log = structlog.get_logger("coordinator.app")


@dataclass(frozen=True, slots=True)
class RunRequest:
    config_path: Path
    options: RunOptions
    output: Path | None = None
    dry_run: bool = False
    json_output: bool = False
    claude_bin: str | None = None
    database_url: str | None = None
    no_database: bool = False
    offline: bool = False
    offline_script: Path | None = None
    quiet: bool = False
    budget_visuals: bool = True
    max_console_lines: int = 0
    max_line_length: int = 120
    max_line_bytes: int | None = None
    skip_command_check: bool = False


def make_plan(req: RunRequest, settings: Settings, *, need_claude: bool) -> RunPlan:
    config = load_config(req.config_path)
    try:
        claude = find_claude(req.claude_bin, settings.claude_bin).path
    except ClaudeNotFoundError:
        if need_claude:
            raise
        claude = "claude"
    return build_plan(
        config,
        req.options,
        claude_bin=claude,
        config_path=req.config_path,
        cwd=Path.cwd(),
        now=datetime.now().astimezone(),
    )


def preflight(
    plan: RunPlan, req: RunRequest, environ: Mapping[str, str], *, dry_run: bool = False
) -> list[str]:
    """Problems that would make instances fail, found before any launch. Returns warnings;
    raises PreflightError for what must stop the run."""
    warnings = [
        f"command budget {key} matches no instance's command"
        for key in unused_command_budgets(plan)
    ]
    if plan.create_workspaces and not dry_run:
        for inst in plan.instances:
            inst.workspace.mkdir(parents=True, exist_ok=True)
    missing = [i for i in plan.instances if not i.workspace.is_dir() and not plan.create_workspaces]
    if missing:
        inst = missing[0]
        raise PreflightError(f"instance {inst.name}: workspace {inst.workspace} does not exist")
    refusal = bypass_refusal(plan, os.geteuid(), dict(environ))
    if refusal:
        raise PreflightError(refusal)
    if not req.skip_command_check:
        _check_slash_commands(plan)
    return warnings


def _check_slash_commands(plan: RunPlan) -> None:
    from coordinator.commands import discovery

    found: dict[Path, discovery.Discovery] = {}
    for inst in plan.instances:
        if not inst.workspace.is_dir():
            continue
        for turn in inst.turns:
            name = discovery.command_name_of(turn)
            if name is None:
                continue
            if inst.workspace not in found:
                found[inst.workspace] = discovery.scan(inst.workspace)
            known = found[inst.workspace]
            try:
                discovery.find(known.commands, "/" + name, hidden=known.hidden)
            except CoordinatorError as exc:
                raise PreflightError(f"instance {inst.name}: {exc}") from None


def dry_run(req: RunRequest, settings: Settings, console: Console) -> int:
    plan = make_plan(req, settings, need_claude=False)
    warnings = preflight_soft(plan, req)
    if req.json_output:
        console.print_json(render_json(plan))
    else:
        console.print(render_text(plan), highlight=False, soft_wrap=True)
        for warning in warnings:
            console.print(f"warning: {warning}", style="yellow", highlight=False)
    return 0


def preflight_soft(plan: RunPlan, req: RunRequest) -> list[str]:
    """Dry-run shows problems instead of refusing."""
    try:
        return preflight(plan, req, os.environ, dry_run=True)
    except PreflightError as exc:
        return [str(exc)]


async def wait_for_start(plan: RunPlan, console: Console) -> bool:
    """Countdown to ``--start-at``; False if interrupted (Ctrl-C, SIGTERM, SIGHUP)."""
    if plan.start_at is None:
        return True
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        target = plan.start_at.timestamp()
        console.print(f"Waiting until {plan.start_at.isoformat()} to start.", highlight=False)
        with console.status("") as status:
            while (left := target - time.time()) > 0:
                status.update(
                    f"starts at {plan.start_at:%Y-%m-%d %H:%M:%S %Z} "
                    f"in {format_countdown(left)} (Ctrl-C to cancel)"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(1.0, left))
                if stop.is_set():
                    console.print("Cancelled before start: nothing was launched.")
                    return False
        return True
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def offline_server(req: RunRequest, plan: RunPlan) -> AsyncIterator[dict[str, str] | None]:
    if not req.offline:
        yield None
        return
    from coordinator.offline.launch import start_offline_server

    async with start_offline_server(plan, req.offline_script) as env:
        yield env


async def open_sink(
    req: RunRequest, settings: Settings, console: Console
) -> tuple[RunSink, str | None]:
    """Where the run is persisted, and the DSN the barrier shares (None: no database)."""
    if req.no_database or settings.no_database:
        return NullSink(), None
    from coordinator.engine.db_sink import open_db_sink

    try:
        sink = await open_db_sink(req.database_url, settings)
        return sink, sink.dsn
    except Exception as exc:  # the run goes on without persistence, loudly
        console.print(
            f"warning: no database, progress is not persisted: {exc}",
            style="yellow",
            highlight=False,
        )
        log.warning("database unavailable", error=str(exc))
        return NullSink(), None


async def run(req: RunRequest, settings: Settings, console: Console) -> int:
    plan = make_plan(req, settings, need_claude=True)
    for warning in preflight(plan, req, os.environ):
        console.print(f"warning: {warning}", style="yellow", highlight=False)
    if not await wait_for_start(plan, console):
        return 130
    output = req.output or default_output_path(plan, datetime.now())
    sink, dsn = await open_sink(req, settings, console)
    reporter = StatusReporter(
        console,
        plan.status_report_interval,
        ReportOptions(
            budget_visuals=req.budget_visuals,
            max_console_lines=req.max_console_lines,
            max_line_length=req.max_line_length,
        ),
        quiet=req.quiet,
    )
    limits = Limits(
        timeout=plan.timeout,
        idle_timeout=plan.idle_timeout,
        max_line_length=req.max_line_length,
        max_console_lines=max(1, req.max_console_lines or 20),
        max_line_bytes=req.max_line_bytes,
    )
    async with offline_server(req, plan) as offline_env:
        orch = Orchestrator(
            plan,
            base_env=os.environ,
            limits=limits,
            sink=sink,
            instance_env=offline_instance_env(offline_env),
            on_note=note_printer(console, enabled=not reporter.live and not req.quiet),
            barrier_dsn=dsn,
        )
        done = asyncio.Event()
        report = asyncio.create_task(reporter.run(orch, done))
        try:
            outcome = await orch.run()
        finally:
            done.set()
            await report
        reporter.final(orch)
    results = build_results(plan, outcome)
    write_results(output, results)
    await sink.close("interrupted" if outcome.interrupted else _overall(outcome.exit_code), results)
    console.print(_summary(results, output), highlight=False)
    return outcome.exit_code


def offline_instance_env(
    env: dict[str, str] | None,
) -> Callable[[PlannedInstance], dict[str, str]] | None:
    if env is None:
        return None

    def per_instance(inst: PlannedInstance) -> dict[str, str]:
        return {**env, "ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {inst.name}"}

    return per_instance


def _overall(code: int) -> str:
    return "completed" if code == 0 else "failed"


def _summary(results: dict[str, Any], output: Path) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in results["counts"].items())
    totals = results["totals"]
    return (
        f"{results['orchestration_id']}: {counts}; {totals['total_tokens']:,} tokens, "
        f"${totals['total_cost_usd']:.4f}; results: {output}"
    )
