"""The run flow behind ``coordinator run`` and ``--dry-run``: load, plan, validate, wait,
run, write results. The CLI module only parses flags and maps errors to exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
import structlog
from rich.console import Console

from coordinator.budget.rules import unused_command_budgets
from coordinator.claude_bin import find_claude
from coordinator.commands.builtins import Builtins
from coordinator.config.direct import DirectCommand, direct_config
from coordinator.config.loader import load_config
from coordinator.control.listener import listen_for_commands
from coordinator.db.journal import replay_journals
from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import OrchestrationRow
from coordinator.dryrun import bypass_refusal, render_json, render_text
from coordinator.engine.db_sink import OrchestrationIdTakenError
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import STOP_SIGNALS, Orchestrator, RunOutcome
from coordinator.engine.sink import NullSink, RunSink
from coordinator.errors import ClaudeNotFoundError, CoordinatorError, DatabaseError, PreflightError
from coordinator.plan import PlannedInstance, RunOptions, RunPlan, build_plan
from coordinator.pool import worktrees
from coordinator.preflight import verify_executables, writable_dir, writable_file
from coordinator.report.section import end_of_run_table
from coordinator.results import build_results, default_output_path, write_results
from coordinator.schedule import format_countdown
from coordinator.settings import Settings
from coordinator.statedir import default_state_dir
from coordinator.status.live import StatusReporter, note_printer
from coordinator.status.render import ReportOptions
from runner import aio

log = structlog.get_logger("coordinator.app")

COUNTDOWN_LINE_EVERY_S = 600.0


@dataclass(frozen=True, slots=True)
class RunRequest:
    config_path: Path | None  # None: direct mode (a command on the command line, no file)
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
    direct: DirectCommand | None = None  # one instance from the command line


@dataclass(frozen=True, slots=True)
class RunHooks:
    """What a run tells whoever started it (a detached run's pidfile and readiness pipe):
    ``ready`` once every check passed, before any ``--start-at`` wait; ``launching`` when
    the wait is over and instances are about to start."""

    ready: Callable[[RunPlan], None] = lambda plan: None
    launching: Callable[[], None] = lambda: None


def make_plan(req: RunRequest, settings: Settings, *, need_claude: bool) -> RunPlan:
    config = load_config(req.config_path) if req.config_path is not None else None
    options = req.options
    if req.direct is not None:
        if config is not None:
            options = dataclasses.replace(options, replaced_instances=len(config.instances))
        config = direct_config(req.direct, config)
    assert config is not None, "a request has a config file or a command"
    try:
        claude = find_claude(req.claude_bin, settings.claude_bin).path
    except ClaudeNotFoundError:
        if need_claude:
            raise
        claude = "claude"
    plan = build_plan(
        config,
        options,
        claude_bin=claude,
        config_path=req.config_path,
        cwd=Path.cwd(),
        now=datetime.now().astimezone(),
        source=None if req.config_path is not None else "(command line)",
    )
    return worktrees.resolve(plan, state_dir_of(settings) / "worktrees")


def preflight(
    plan: RunPlan,
    req: RunRequest,
    environ: Mapping[str, str],
    *,
    state_dir: Path,
    dry_run: bool = False,
) -> list[str]:
    """Problems that would make instances fail, found before any launch. Returns warnings;
    raises PreflightError for what must stop the run."""
    warnings = [*plan.notes]
    warnings += [
        f"command budget {key} matches no instance's command"
        for key in unused_command_budgets(plan)
    ]
    refused = worktrees.refusal(plan)
    if refused:
        raise PreflightError(refused)
    if not dry_run:  # a run writes its results and in every workspace: can it?
        writable_file(req.output or default_output_path(plan, datetime.now()), "results")
        for inst in plan.instances:
            if inst.worktree is not None:  # made before launch, in the state directory
                continue
            writable_dir(
                inst.workspace, f"instance {inst.name}: workspace", create=plan.create_workspaces
            )
    missing = [
        i
        for i in plan.instances
        if not i.workspace.is_dir() and not plan.create_workspaces and i.worktree is None
    ]
    if missing:
        inst = missing[0]
        raise PreflightError(f"instance {inst.name}: workspace {inst.workspace} does not exist")
    verify_executables(plan, environ)
    refusal = bypass_refusal(plan, os.geteuid(), dict(environ))
    if refusal:
        raise PreflightError(refusal)
    if not req.skip_command_check:
        _check_slash_commands(plan, state_dir)
    return warnings


def _check_slash_commands(plan: RunPlan, state_dir: Path) -> None:
    """Every slash command a turn starts with exists for the claude that will run."""
    from coordinator.commands import discovery

    found: dict[tuple[Path, str], discovery.Discovery] = {}
    builtins: dict[str, Builtins] = {}  # per claude, asked only when a turn names a command
    for inst in plan.instances:
        if not inst.workspace.is_dir():
            continue
        for turn in inst.turns:
            name = discovery.command_name_of(turn)
            if name is None:
                continue
            if inst.claude_bin not in builtins:
                builtins[inst.claude_bin] = _builtins_of(inst.claude_bin, state_dir)
            where = (inst.workspace, inst.claude_bin)
            if where not in found:
                found[where] = discovery.scan(inst.workspace, builtins=builtins[inst.claude_bin])
            known = found[where]
            try:
                discovery.find(known.commands, "/" + name, hidden=known.hidden)
            except CoordinatorError as exc:
                raise PreflightError(f"instance {inst.name}: {exc}") from None


def _builtins_of(claude_bin: str, state_dir: Path) -> Builtins:
    """The built-ins of the claude that will run (asked when it is not the pinned version).
    A dry run may have no claude at all: then the recorded ones."""
    from coordinator.commands.asked import builtins_for
    from coordinator.commands.builtins import RECORDED

    try:
        asked = builtins_for(claude_bin, state_dir, warn=lambda text: log.warning(text))
    except ClaudeNotFoundError:
        log.info("no claude to ask for its slash commands: recorded ones", claude_bin=claude_bin)
        return RECORDED
    except CoordinatorError as exc:
        raise PreflightError(
            f"cannot ask {claude_bin} for its slash commands: {exc} "
            "(--skip-command-check launches without this check)"
        ) from None
    if asked.builtins.source == "probe":
        log.info(
            "asked claude for its slash commands",
            claude_bin=claude_bin,
            version=asked.builtins.version,
            cache=str(asked.cache_path),
        )
    return asked.builtins


def dry_run(req: RunRequest, settings: Settings, console: Console) -> int:
    plan = make_plan(req, settings, need_claude=False)
    warnings = preflight_soft(plan, req, state_dir_of(settings))
    if req.json_output:
        console.print_json(render_json(plan))
    else:
        console.print(render_text(plan), highlight=False, soft_wrap=True)
        for warning in warnings:
            console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
    return 0


def say_warnings(warnings: list[str]) -> None:
    """Warnings before a run, on stderr: stdout is the report (and in a pipe, its lines)."""
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def preflight_soft(plan: RunPlan, req: RunRequest, state_dir: Path) -> list[str]:
    """Dry-run shows problems instead of refusing."""
    try:
        return preflight(plan, req, os.environ, dry_run=True, state_dir=state_dir)
    except PreflightError as exc:
        return [*plan.notes, str(exc)]


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
        log.info("scheduled", start_at=plan.start_at.isoformat())
        next_line = 0.0  # off a terminal (a log, a detached run): a countdown line now and then
        with console.status("") as status:
            while (left := target - time.time()) > 0:
                countdown = (
                    f"starts at {plan.start_at:%Y-%m-%d %H:%M:%S %Z} in {format_countdown(left)}"
                )
                status.update(f"{countdown} (Ctrl-C to cancel)")
                if not console.is_terminal and time.monotonic() >= next_line:
                    console.print(countdown, highlight=False)
                    next_line = time.monotonic() + COUNTDOWN_LINE_EVERY_S
                with contextlib.suppress(TimeoutError):
                    await aio.wait_for(stop.wait(), min(1.0, left))
                if stop.is_set():
                    console.print("Cancelled before start: nothing was launched.")
                    log.info("cancelled before start")
                    return False
        log.info("start time reached", start_at=plan.start_at.isoformat())
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


@dataclass(frozen=True, slots=True)
class RunDatabase:
    store: PostgresStore
    dsn: str  # for the barrier's own connections; never shown (masked is)
    masked: str


async def check_database(
    req: RunRequest, settings: Settings, plan: RunPlan, say: Callable[[str], None]
) -> RunDatabase | None:
    """Before anything launches (and before a ``--start-at`` wait): the database the run
    will persist to is reachable, migrated, and does not hold this orchestration id yet.
    Journals of earlier runs are replayed into it now. None: the run has no database."""
    if req.no_database or settings.no_database:
        return None
    from coordinator.db import open_store, resolve_dsn

    no_db = "; fix it, or run with --no-db to run without persistence"
    try:
        resolved = await asyncio.to_thread(resolve_dsn, settings.database_dsn(req.database_url))
    except DatabaseError as exc:
        raise PreflightError(f"database: {exc}{no_db}") from None
    try:
        store = await open_store(resolved.dsn)
    except DatabaseError as exc:
        raise PreflightError(f"database ({resolved.source}) unreachable: {exc}{no_db}") from None
    try:
        for line in await replay_journals(store, state_dir_of(settings)):
            say(line)
        if await store.get_orchestration(plan.orchestration_id) is not None:
            raise OrchestrationIdTakenError(plan.orchestration_id, resolved.masked)
    except BaseException:
        await store.close()
        raise
    return RunDatabase(store, resolved.dsn, resolved.masked)


def state_dir_of(settings: Settings) -> Path:
    return settings.state_dir or default_state_dir()


def open_sink(
    db: RunDatabase | None,
    settings: Settings,
    launch: dict[str, Any] | None = None,
    reopened: OrchestrationRow | None = None,
) -> tuple[RunSink, str | None]:
    """Where the run is persisted, and the DSN the barrier shares (None: no database)."""
    if db is None:
        return NullSink(), None
    from coordinator.engine.db_sink import DbSink

    sink = DbSink(
        db.store,
        db.masked,
        db.dsn,
        state_dir=state_dir_of(settings),
        lease_s=settings.lease_s,
        close_deadline_s=settings.db_close_timeout,
        launch=launch,
        reopened=reopened,
    )
    return sink, db.dsn


def launch_of(req: RunRequest, output: Path) -> dict[str, Any]:
    """How this run was launched, kept with it in the database for ``coordinator resume``."""
    from coordinator.control.resume import launch_record

    opts = req.options
    options = {
        "workspace": str(opts.workspace) if opts.workspace is not None else None,
        "startup_delay": opts.startup_delay,
        "timeout": opts.timeout,
        "idle_timeout": opts.idle_timeout,
        "status_report_interval": opts.status_report_interval,
        "overall_token_budget": opts.overall_token_budget,
        "command_budgets": dict(opts.command_budgets),
        "overall_cost_budget": opts.overall_cost_budget,
        "command_cost_budgets": dict(opts.command_cost_budgets),
        "budget_mode": opts.budget_mode.value if opts.budget_mode else None,
        "sync_mode": opts.sync_mode.value if opts.sync_mode else None,
        "permission_mode": opts.permission_mode.value if opts.permission_mode else None,
        "max_attempts": opts.max_attempts,
        "budget_type": opts.budget_type.value if opts.budget_type else None,
        "output_format": opts.output_format,
    }
    flags = {
        "claude_bin": req.claude_bin,
        "offline": req.offline,
        "offline_script": str(req.offline_script.resolve()) if req.offline_script else None,
        "skip_command_check": req.skip_command_check,
        "max_line_bytes": req.max_line_bytes,
        "budget_visuals": req.budget_visuals,
    }
    return launch_record(
        config_path=req.config_path,
        direct=req.direct.as_record() if req.direct is not None else None,
        cwd=Path.cwd(),
        options=options,
        output=output,
        flags=flags,
    )


async def run(
    req: RunRequest, settings: Settings, console: Console, hooks: RunHooks | None = None
) -> int:
    hooks = hooks or RunHooks()
    plan = make_plan(req, settings, need_claude=True)
    warnings = preflight(plan, req, os.environ, state_dir=state_dir_of(settings))
    db = await check_database(req, settings, plan, lambda line: console.print(line))
    say_warnings(warnings)  # once every check passed: a refusal stays one line
    try:
        hooks.ready(plan)
        started = await wait_for_start(plan, console)
        if started:
            hooks.launching()
    except BaseException:
        if db is not None:
            await db.store.close()
        raise
    if not started:
        if db is not None:
            await db.store.close()
        return 130
    output = req.output or default_output_path(plan, datetime.now())
    return await execute(plan, req, settings, console, db, output)


async def execute(
    plan: RunPlan,
    req: RunRequest,
    settings: Settings,
    console: Console,
    db: RunDatabase | None,
    output: Path,
    *,
    reopened: OrchestrationRow | None = None,
    prepare: Callable[[Orchestrator], None] | None = None,
) -> int:
    """Run a plan whose checks passed, to the end: every instance, the results file, the
    database closed (or journalled). ``reopened``: a resumed run whose row this process has
    taken over; ``prepare`` puts its stored state into the orchestrator before launching."""
    sink, dsn = open_sink(db, settings, launch_of(req, output), reopened)
    signals = SignalRouter(asyncio.get_running_loop())
    reporter = StatusReporter(
        console,
        plan.status_report_interval,
        ReportOptions(
            budget_visuals=req.budget_visuals and plan.budget.visuals,
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
    outcome: RunOutcome | None = None
    orch: Orchestrator | None = None
    made: list[worktrees.Made] = []
    try:
        made = await asyncio.to_thread(worktrees.create, plan)  # before any launch
        async with offline_server(req, plan) as offline_env:
            orch = Orchestrator(
                plan,
                base_env=os.environ,
                limits=limits,
                sink=sink,
                instance_env=offline_instance_env(offline_env),
                on_note=note_printer(console, enabled=not reporter.live and not req.quiet),
                barrier_dsn=dsn,
                handle_signals=False,
                keep_config_dirs=state_dir_of(settings) / "claude-config" if db else None,
                pool_store=db.store if db is not None else None,
            )
            if prepare is not None:
                prepare(orch)
            signals.route(lambda name: orch.cancel(f"interrupted by {name}") if orch else None)
            done = asyncio.Event()
            report = asyncio.create_task(reporter.run(orch, done))
            try:
                async with listen_for_commands(dsn, plan.orchestration_id, orch):
                    outcome = await orch.run()
            finally:
                done.set()
                await report
            reporter.final(orch)
    finally:
        # Every exit path ends here: the results are written and the orchestration row is
        # closed (or journalled), also when the run itself raised.
        if outcome is None and orch is not None:
            outcome = orch.outcome()
        results = build_results(plan, outcome) if outcome is not None else None
        if made and results is not None:
            keep = plan.config.orchestration.keep_worktrees
            results["worktrees"] = await asyncio.to_thread(worktrees.finish, made, keep=keep)
        where = (
            save_results(output, results, state_dir_of(settings), console)
            if results is not None
            else None
        )
        status = "failed" if outcome is None else _overall(outcome)
        try:
            await close_sink(
                sink, status, results or {"orchestration_id": plan.orchestration_id}, signals
            )
        finally:
            signals.uninstall()
    assert outcome is not None and results is not None
    if req.json_output:
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
        sys.stdout.flush()
    if not req.quiet and (table := end_of_run_table(results)) is not None:
        console.print(table)
    console.print(_summary(results, where), highlight=False, soft_wrap=True)
    return outcome.exit_code


def save_results(
    output: Path, results: dict[str, Any], state_dir: Path, console: Console
) -> Path | None:
    """The results file, or, if it cannot be written at the end (disk full, the directory
    gone), a fallback in the state directory, said in one line. None: nowhere (then the
    JSON goes to stderr, the last place left)."""
    try:
        write_results(output, results)
        return output
    except OSError as exc:
        problem = f"{exc.strerror or exc}"
    fallback = state_dir / "results" / output.name
    try:
        write_results(fallback, results)
    except OSError as exc:
        console.print(
            f"error: could not write the results to {output} ({problem}) nor to {fallback} "
            f"({exc.strerror or exc}); here they are:",
            style="red",
            highlight=False,
            soft_wrap=True,
        )
        sys.stderr.write(orjson.dumps(results).decode() + "\n")
        return None
    console.print(
        f"warning: could not write the results to {output} ({problem}); "
        f"written to {fallback} instead",
        style="yellow",
        highlight=False,
        soft_wrap=True,
    )
    return fallback


async def close_sink(
    sink: RunSink, status: str, results: dict[str, Any], signals: SignalRouter
) -> None:
    """Close the database side within its deadline. A signal meanwhile (or one that came
    after the instances ended) stops waiting: what is unwritten is journalled at once."""
    closing = asyncio.ensure_future(sink.close(status, results))
    signals.route(lambda name: closing.cancel(), replay=False)
    with contextlib.suppress(asyncio.CancelledError):
        await closing


class SignalRouter:
    """SIGINT, SIGTERM and SIGHUP for the whole run, from launch to the last row: each goes
    to what the run is doing at that moment (stop the instances, cut the final flush short).
    Never a gap in which the default action would kill the coordinator mid-way."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._target: Callable[[str], object] | None = None
        self.received: str | None = None
        self._installed: list[signal.Signals] = []
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self._got, sig)
                self._installed.append(sig)

    def _got(self, sig: signal.Signals) -> None:
        self.received = self.received or sig.name
        if self._target is not None:
            self._target(sig.name)

    def route(self, target: Callable[[str], object], *, replay: bool = True) -> None:
        """From now on signals go to ``target``; with ``replay``, one that came before goes
        there now (a Ctrl-C during set-up still stops the run)."""
        self._target = target
        if replay and self.received is not None:
            target(self.received)

    def uninstall(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed = []


def offline_instance_env(
    env: dict[str, str] | None,
) -> Callable[[PlannedInstance], dict[str, str]] | None:
    if env is None:
        return None

    def per_instance(inst: PlannedInstance) -> dict[str, str]:
        return {**env, "ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {inst.name}"}

    return per_instance


def _overall(outcome: RunOutcome) -> str:
    if outcome.interrupted:
        return "interrupted"
    return "completed" if outcome.exit_code == 0 else "failed"


def _summary(results: dict[str, Any], output: Path | None) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in results["counts"].items())
    totals = results["totals"]
    return (
        f"{results['orchestration_id']}: {counts}; {totals['total_tokens']:,} tokens, "
        f"${totals['total_cost_usd']:.4f}; results: {output or 'not written (see above)'}"
    )
