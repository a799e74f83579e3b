"""Command line: flags users of the existing orchestrator know, plus sync, database, claude.

``coordinator run --config F`` is the main form; ``coordinator --dry-run --config F``,
``coordinator --list-commands`` and ``coordinator --inspect-command /x`` work as top-level
flags too. Direct mode, as the Python orchestrator has it: ``coordinator run "/analyze src"``
(or ``coordinator "/analyze src"``) runs that one instance without a config file. Every
error the user can cause ends as one line on stderr and an exit code: 2 for bad input, 1
for a run where an instance did not complete, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from coordinator import app
from coordinator.budget.flags import parse_command_budgets
from coordinator.config.direct import DirectCommand
from coordinator.config.models import (
    INT64_MAX,
    ORCHESTRATION_ID_PATTERN,
    ORCHESTRATION_ID_RULE,
    BudgetMode,
    BudgetType,
    PermissionMode,
    SyncMode,
)
from coordinator.errors import CoordinatorError, PreflightError, UsageError
from coordinator.logs import configure_logging
from coordinator.plan import RunOptions
from coordinator.schedule import parse_start_at
from coordinator.settings import Settings, load_settings
from coordinator.status.terminal import guard_std_streams

F = TypeVar("F", bound=Callable[..., Any])

# --log-level as the Python orchestrator names its console verbosity
VERBOSITY = ("silent", "concise", "detailed")


class FiniteFloat(click.FloatRange):
    """click's FloatRange lets 'nan' and 'inf' through (no comparison refuses NaN)."""

    name = "finite number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


RUN_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "--config", "config_path", type=click.Path(path_type=Path), help="JSON instance config."
    ),
    click.option(
        "--workspace",
        type=click.Path(path_type=Path),
        help="Directory the instances work in (default: config's, else cwd).",
    ),
    click.option(
        "--output",
        type=click.Path(path_type=Path),
        help="Results JSON path (default: coordinator-results-<time>-<id>.json).",
    ),
    click.option(
        "--output-format",
        type=click.Choice(["stream-json", "json"]),
        help="claude output format: stream-json (the default). json is accepted and still "
        "runs as stream-json (live accounting needs it), said once.",
    ),
    click.option(
        "--timeout",
        type=FiniteFloat(min=0, min_open=True),
        help="Per-instance wall-clock limit, seconds.",
    ),
    click.option(
        "--idle-timeout",
        type=FiniteFloat(min=0, min_open=True),
        help="Stop an instance that prints nothing for this many seconds.",
    ),
    click.option(
        "--max-console-lines",
        type=click.IntRange(min=0, max=INT64_MAX),
        default=0,
        help="Output lines shown per running instance in the status report.",
    ),
    click.option(
        "--max-line-length",
        type=click.IntRange(min=20, max=INT64_MAX),
        default=120,
        help="Clip shown output lines to this many characters.",
    ),
    click.option(
        "--max-line-bytes",
        type=click.IntRange(min=1024, max=INT64_MAX),
        help="Skip (never fail on) stream lines larger than this; default no limit.",
    ),
    click.option("--quiet", is_flag=True, help="Errors and the final summary only."),
    click.option(
        "--log-level",
        "verbosity",
        type=click.Choice(VERBOSITY),
        help="silent: as --quiet; concise (default): the report, warnings and errors; "
        "detailed: also the log file at debug and, off a terminal, info lines on stderr.",
    ),
    click.option("--verbose", is_flag=True, help="The same as --log-level detailed."),
    click.option(
        "--startup-delay", type=FiniteFloat(min=0), help="Seconds between instance launches."
    ),
    click.option(
        "--status-report-interval",
        type=FiniteFloat(min=0, min_open=True),
        help="Seconds between status reports.",
    ),
    click.option("--start-at", help="Start later: 2am, 14:30, 1h30m, 30m, ISO 8601."),
    click.option(
        "--max-attempts",
        type=click.IntRange(min=1, max=1000),
        help="Launch an instance that failed for a transient cause again (continuing its "
        "session), up to this many launches in all.",
    ),
    click.option("--overall-token-budget", type=click.IntRange(min=1, max=INT64_MAX)),
    click.option(
        "--command-budget",
        "command_budgets",
        multiple=True,
        metavar="/CMD=N",
        help="Token budget shared by instances running /CMD (repeatable; the slash may be "
        "left out; '/a=N,/b=M' sets several).",
    ),
    click.option("--overall-cost-budget", type=FiniteFloat(min=0, min_open=True), help="USD."),
    click.option(
        "--command-cost-budget",
        "command_cost_budgets",
        multiple=True,
        metavar="/CMD=USD",
        help="USD budget shared by instances running /CMD (as --command-budget).",
    ),
    click.option(
        "--budget-parameter-type",
        "budget_type",
        type=click.Choice([t.value for t in BudgetType]),
        help="Which budgets count: tokens (only token budgets), cost (only USD budgets), "
        "mixed (every budget given, the default).",
    ),
    click.option("--budget-enforcement-mode", type=click.Choice([m.value for m in BudgetMode])),
    click.option("--disable-budget-visuals", is_flag=True),
    click.option("--sync-mode", type=click.Choice([m.value for m in SyncMode])),
    click.option(
        "--permission-mode",
        type=click.Choice([m.value for m in PermissionMode]),
        help="Override every instance's permission mode.",
    ),
    click.option(
        "--database-url",
        help="Postgres DSN (else COORDINATOR_DATABASE_URL, "
        "DATABASE_URL, else an embedded local server).",
    ),
    click.option("--no-db", "no_database", is_flag=True, help="Do not persist to Postgres."),
    click.option("--claude-bin", help="Path of the claude executable."),
    click.option("--orchestration-id"),
    click.option(
        "--offline",
        is_flag=True,
        help="Run against the project's scripted model server (no API key, no net).",
    ),
    click.option(
        "--offline-script",
        type=click.Path(path_type=Path),
        help="Model-server script for --offline (default: built from scenarios).",
    ),
    click.option(
        "--skip-command-check",
        is_flag=True,
        help="Do not check that slash commands exist before launching.",
    ),
    click.option("--json", "json_output", is_flag=True, help="Machine-readable output."),
    click.option("--log-file", type=click.Path(path_type=Path)),
    click.option(
        "--detach",
        is_flag=True,
        help="Check everything, then run in the background (own session, pidfile in the "
        "state directory); print how to watch and stop it. With --json: that as JSON.",
    ),
    click.option("--detached-ready-fd", type=int, hidden=True),  # the daemon of --detach
    # direct mode: one instance from the command given on the command line
    click.option("--instance-name", help="Direct mode: the instance's name."),
    click.option("--instance-description", help="Direct mode: the instance's description."),
    click.option(
        "--session-id", help="Direct mode: the claude session (a UUID, or a name mapped to one)."
    ),
    click.option("--clear-history", is_flag=True, help="Direct mode: start a fresh session."),
    click.option(
        "--compact-history",
        is_flag=True,
        help="Direct mode: send /compact first when continuing a session.",
    ),
]

DIRECT_FLAGS = {
    "instance_name": "--instance-name",
    "instance_description": "--instance-description",
    "session_id": "--session-id",
    "clear_history": "--clear-history",
    "compact_history": "--compact-history",
}


def run_options(func: F) -> F:
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


def verbosity_of(kw: dict[str, Any]) -> str:
    """silent, concise or detailed: --log-level, else --quiet, else --verbose (the Python
    orchestrator's order)."""
    if kw.get("verbosity"):
        return str(kw["verbosity"])
    if kw.get("quiet"):
        return "silent"
    return "detailed" if kw.get("verbose") else "concise"


def _direct(kw: dict[str, Any]) -> DirectCommand | None:
    command = kw.get("direct_command")
    if command is None:
        given = [flag for name, flag in DIRECT_FLAGS.items() if kw.get(name)]
        if given:
            raise UsageError(
                f"{given[0]} belongs to direct mode: give the command too "
                f'(coordinator run "/command args" {given[0]} ...)'
            )
        return None
    return DirectCommand(
        command=command,
        name=kw.get("instance_name"),
        description=kw.get("instance_description"),
        session_id=kw.get("session_id"),
        clear_history=bool(kw.get("clear_history")),
        compact_history=bool(kw.get("compact_history")),
    )


def _request(kw: dict[str, Any], dry_run: bool) -> app.RunRequest:
    direct = _direct(kw)
    if kw.get("config_path") is None and direct is None:
        raise UsageError(
            "--config is required (a JSON instance config), "
            'or give a command: coordinator run "/cmd"'
        )
    orch_id = kw.get("orchestration_id")
    if orch_id is not None and not re.fullmatch(ORCHESTRATION_ID_PATTERN, orch_id):
        raise UsageError(f"--orchestration-id {orch_id!r}: use {ORCHESTRATION_ID_RULE} characters")
    start_at = None
    if kw.get("start_at") is not None:
        start_at = parse_start_at(kw["start_at"], datetime.now().astimezone())
    options = RunOptions(
        orchestration_id=kw.get("orchestration_id"),
        workspace=kw.get("workspace"),
        startup_delay=kw.get("startup_delay"),
        timeout=kw.get("timeout"),
        idle_timeout=kw.get("idle_timeout"),
        status_report_interval=kw.get("status_report_interval"),
        overall_token_budget=kw.get("overall_token_budget"),
        command_budgets=parse_command_budgets(
            kw.get("command_budgets") or (), "--command-budget", int
        ),
        overall_cost_budget=kw.get("overall_cost_budget"),
        command_cost_budgets=parse_command_budgets(
            kw.get("command_cost_budgets") or (), "--command-cost-budget", float
        ),
        budget_mode=BudgetMode(kw["budget_enforcement_mode"])
        if kw.get("budget_enforcement_mode")
        else None,
        sync_mode=SyncMode(kw["sync_mode"]) if kw.get("sync_mode") else None,
        permission_mode=PermissionMode(kw["permission_mode"])
        if kw.get("permission_mode")
        else None,
        start_at=start_at,
        max_attempts=kw.get("max_attempts"),
        budget_type=BudgetType(kw["budget_type"]) if kw.get("budget_type") else None,
        output_format=kw.get("output_format"),
    )
    return app.RunRequest(
        config_path=kw["config_path"],
        options=options,
        output=kw.get("output"),
        dry_run=dry_run,
        json_output=bool(kw.get("json_output")),
        claude_bin=kw.get("claude_bin"),
        database_url=kw.get("database_url"),
        no_database=bool(kw.get("no_database")),
        offline=bool(kw.get("offline")),
        offline_script=kw.get("offline_script"),
        quiet=verbosity_of(kw) == "silent",
        budget_visuals=not kw.get("disable_budget_visuals"),
        max_console_lines=kw.get("max_console_lines") or 0,
        max_line_length=kw.get("max_line_length") or 120,
        max_line_bytes=kw.get("max_line_bytes"),
        skip_command_check=bool(kw.get("skip_command_check")),
        direct=direct,
    )


def _console(*, stderr: bool = False) -> Console:
    """The terminal. ``stderr``: everything goes to stderr (``run --json`` keeps stdout
    for the one JSON document it prints)."""
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # a log or a pipe: rich's 80 columns would clip the table
    return console


def _settings_and_logging(kw: dict[str, Any], dry_run: bool) -> Settings:
    """JSON lines to the log file (default: <state dir>/logs/coordinator.jsonl); the
    terminal gets the status report, and plain log lines only when it is not a terminal.

    A dry run writes nothing, so it needs neither. A run refuses an explicit log file it
    cannot write (exit 2), says in one line that it goes on without the default one, and,
    when it uses a database, refuses a state directory it cannot write (its embedded server
    and what it keeps there live in it); ``--no-db`` needs none."""
    import platformdirs

    from coordinator.preflight import writable_dir, writable_file

    settings = load_settings()
    console = not sys.stderr.isatty()
    detailed = verbosity_of(kw) == "detailed"
    level = "debug" if detailed else settings.log_level
    shown = "info" if detailed else "warning"
    if dry_run:
        configure_logging(None, level, console=console, console_level=shown)
        return settings
    state_dir = settings.state_dir or platformdirs.user_state_path("coordinator")
    if not (kw.get("no_database") or settings.no_database):
        writable_dir(
            state_dir,
            "state directory",
            create=True,
            hint=" (set COORDINATOR_STATE_DIR, or run with --no-db)",
        )
    explicit = kw.get("log_file") or settings.log_file
    log_file = _log_file(kw, settings)
    origin = "--log-file" if kw.get("log_file") else "COORDINATOR_LOG_FILE" if explicit else "log"
    try:
        writable_file(log_file, origin)
        try:
            configure_logging(log_file, level, console=console, console_level=shown)
        except OSError as exc:
            raise PreflightError(f"{origin} {log_file}: {exc.strerror or exc}") from None
    except PreflightError as exc:
        if explicit:
            raise
        click.echo(
            f"coordinator: warning: no log file: {exc} (set --log-file or COORDINATOR_LOG_FILE)",
            err=True,
        )
        configure_logging(None, level, console=console, console_level=shown)
    return settings


def _log_file(kw: dict[str, Any], settings: Settings) -> Path:
    from coordinator.statedir import default_state_dir

    explicit = kw.get("log_file") or settings.log_file
    return explicit or (settings.state_dir or default_state_dir()) / "logs" / "coordinator.jsonl"


def _execute(kw: dict[str, Any], dry_run: bool) -> int:
    if kw.get("detached_ready_fd") is not None:
        return _run_detached(kw)
    settings = _settings_and_logging(kw, dry_run)
    req = _request(kw, dry_run)
    console = _console(stderr=req.json_output and not dry_run)
    if kw.get("detach"):
        from coordinator.control.detach import detach

        log_file = _log_file(kw, settings)
        return detach(
            req,
            settings,
            console,
            params=run_cmd.params,
            kw=kw,
            log_file=log_file if log_file.is_file() else None,
        )
    if dry_run:
        return app.dry_run(req, settings, console)
    return asyncio.run(app.run(req, settings, console))


def _run_detached(kw: dict[str, Any]) -> int:
    """The daemon ``--detach`` started: the same run, its pidfile locked, its verdict (ready
    or the error that refused it) sent back to the foreground."""
    from coordinator.control.detach import DetachedChild

    with DetachedChild(kw["detached_ready_fd"]) as child:
        kw = {**kw, **child.receive_secrets()}
        settings = _settings_and_logging(kw, dry_run=False)
        req = _request(kw, dry_run=False)
        if not (kw.get("orchestration_id") and kw.get("output")):
            raise UsageError("--detached-ready-fd is internal to --detach")
        child.lock(
            app.state_dir_of(settings),
            kw["orchestration_id"],
            _log_file(kw, settings),
            kw["output"].absolute(),
        )
        return asyncio.run(app.run(req, settings, _console(), hooks=child.hooks()))


def first_positional(params: list[click.Parameter], args: list[str]) -> str | None:
    """The first word of ``args`` that is neither an option nor an option's value."""
    takes_value = {
        opt
        for param in params
        if isinstance(param, click.Option) and not param.is_flag
        for opt in param.opts
    }
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if word.startswith("-") and word != "-":
            i += 2 if word in takes_value else 1
            continue
        return word
    return None


class DirectGroup(click.Group):
    """``coordinator "/analyze src" ...`` is ``coordinator run "/analyze src" ...`` (the
    Python orchestrator's top-level direct mode). Only a word that starts with '/' or holds
    a space counts: a mistyped subcommand stays an error, never a prompt sent to claude."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        word = first_positional(self.params, args)
        if (
            word is not None
            and word not in self.commands
            and (word.startswith("/") or any(c.isspace() for c in word))
        ):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DirectGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--dry-run", is_flag=True, help="Show exactly what would launch; launch nothing.")
@click.option("--list-commands", is_flag=True, help="List the slash commands claude offers.")
@click.option("--inspect-command", metavar="/NAME", help="Show one slash command in detail.")
@run_options
@click.pass_context
def cli(
    ctx: click.Context,
    /,
    dry_run: bool,
    list_commands: bool,
    inspect_command: str | None,
    **kw: Any,
) -> int:
    """Run many Claude Code CLI instances in parallel, with exact live token accounting,
    budgets, barriers and a Postgres progress store."""
    if ctx.invoked_subcommand is not None:
        given = [
            param.opts[0]
            for param in ctx.command.params
            if param.name
            and ctx.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:  # `coordinator --dry-run run ...` must never be a run that is not dry
            raise UsageError(
                f"{given[0]} before '{ctx.invoked_subcommand}' is not read: "
                f"put it after it (coordinator {ctx.invoked_subcommand} {given[0]} ...)"
            )
        return 0
    if list_commands or inspect_command:
        from coordinator.commands.cli import inspect_main, list_main

        workspace = kw.get("workspace") or Path.cwd()
        claude_bin = kw.get("claude_bin")
        if inspect_command:
            return inspect_main(inspect_command, workspace, bool(kw.get("json_output")), claude_bin)
        return list_main(workspace, bool(kw.get("json_output")), claude_bin)
    if dry_run:
        return _execute(kw, dry_run=True)
    if kw.get("config_path") is not None:
        return _execute(kw, dry_run=False)
    click.echo(ctx.get_help())
    return 0


@cli.command("run")
@click.argument("direct_command", metavar="[COMMAND]", required=False)
@click.option("--dry-run", is_flag=True, help="Show exactly what would launch; launch nothing.")
@click.option(
    "--fleet",
    is_flag=True,
    help="Queue the run in the database so that runners on other hosts join it; this "
    "process runs up to --capacity of its instances itself.",
)
@click.option(
    "--capacity",
    type=click.IntRange(min=1, max=10_000),
    help="With --fleet: instances this process runs at once (default: all of them).",
)
@run_options
def run_cmd(dry_run: bool, fleet: bool, capacity: int | None, **kw: Any) -> int:
    """Launch every instance of a config and watch them to the end. With a COMMAND
    ("/analyze src", or a prompt): run that one instance, no config file needed (with
    --config: instead of its instances, under its settings)."""
    if capacity is not None and not fleet:
        raise UsageError("--capacity: only with --fleet (a one-host run launches every instance)")
    if fleet and not dry_run:
        from coordinator.fleet.hosted import run_hosted

        if kw.get("detach"):
            raise UsageError("run --fleet --detach: not supported yet (use submit and runners)")
        settings = _settings_and_logging(kw, dry_run=False)
        req = _request(kw, dry_run=False)
        return asyncio.run(run_hosted(req, settings, _console(stderr=req.json_output), capacity))
    return _execute(kw, dry_run=dry_run)


@cli.command("submit")
@click.option("--wait", is_flag=True, help="Stay until every instance ended; write the results.")
@run_options
def submit_cmd(wait: bool, **kw: Any) -> int:
    """Record a run and queue its instances for runners on any host (coordinator runner);
    prints the orchestration id. The stagger and --start-at become not-before times."""
    from coordinator.fleet.submit import submit

    if kw.get("detach"):
        raise UsageError("submit --detach: submit returns at once already (leave out --detach)")
    settings = _settings_and_logging(kw, dry_run=False)
    req = _request(kw, dry_run=False)
    return asyncio.run(submit(req, settings, _console(stderr=True), wait=wait))


@cli.command("runner")
@click.option("--database-url")
@click.option(
    "--capacity",
    type=click.IntRange(min=1, max=10_000),
    default=1,
    show_default=True,
    help="Instances held at once.",
)
@click.option("--name", help="This runner's name (default: host-pid).")
@click.option("--labels", help="Labels this runner has (a,b): it claims instances asking for them.")
@click.option("--log-file", type=click.Path(path_type=Path))
def runner_cmd(
    database_url: str | None,
    capacity: int,
    name: str | None,
    labels: str | None,
    log_file: Path | None,
) -> int:
    """Claim instances of submitted runs from the database and run them, up to --capacity
    at once. SIGTERM drains (claims nothing more, finishes what it holds); a second one
    hands back what it holds."""
    from coordinator.fleet.serve import serve

    settings = _settings_and_logging({"log_file": log_file}, dry_run=False)
    return asyncio.run(serve(settings, _console(), database_url, capacity, name, labels))


@cli.command("results")
@click.argument("orchestration_id", required=False)
@click.option("--output", type=click.Path(path_type=Path), help="The results file.")
@click.option("--wait", is_flag=True, help="Wait until every instance ended.")
@click.option("--database-url")
def results_cmd(
    orchestration_id: str | None, output: Path | None, wait: bool, database_url: str | None
) -> int:
    """Write the results of a submitted run once every instance ended (default: the
    newest run; the file its submit named unless --output)."""
    from coordinator.fleet.submit import results

    console = _console()
    settings = load_settings()
    return asyncio.run(
        _with_store(
            database_url,
            lambda store: results(
                store,
                console,
                settings,
                orchestration_id,
                output,
                wait=wait,
                database_url=database_url,
            ),
        )
    )


@cli.command("resume")
@click.argument("orchestration_id", required=False)
@click.option(
    "--instance",
    "instances",
    multiple=True,
    metavar="NAME",
    help="Resume only this instance (repeatable; default: every one that did not complete).",
)
@click.option(
    "--include-blocked",
    is_flag=True,
    help="Also resume instances a budget blocked or skipped (if the budget now allows).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The config to resume with (default: the one the run was launched with).",
)
@click.option("--max-attempts", type=click.IntRange(min=1, max=1000))
@click.option("--database-url")
@click.option("--quiet", is_flag=True)
@click.option("--json", "json_output", is_flag=True)
@click.option("--log-file", type=click.Path(path_type=Path))
def resume_cmd(
    orchestration_id: str | None,
    instances: tuple[str, ...],
    include_blocked: bool,
    config_path: Path | None,
    max_attempts: int | None,
    database_url: str | None,
    quiet: bool,
    json_output: bool,
    log_file: Path | None,
) -> int:
    """Relaunch the instances of a run that did not complete (failed, timed out, cancelled,
    lost with its coordinator), each continuing its own claude session, as new attempts in
    the same orchestration; tokens and cost carry on. Default: the newest run."""
    from coordinator.control.resume_run import ResumeRequest, resume

    settings = _settings_and_logging({"log_file": log_file}, dry_run=False)
    request = ResumeRequest(
        orchestration_id=orchestration_id,
        instances=instances,
        include_blocked=include_blocked,
        config_path=config_path,
        database_url=database_url,
        max_attempts=max_attempts,
        quiet=quiet,
        json_output=json_output,
    )
    return asyncio.run(resume(request, settings, _console(stderr=json_output)))


@cli.command("doctor")
@click.option("--json", "json_output", is_flag=True)
@click.option("--claude-bin")
@click.option("--database-url")
@click.option("--config", "config_path", type=click.Path(path_type=Path))
def doctor_cmd(
    json_output: bool, claude_bin: str | None, database_url: str | None, config_path: Path | None
) -> int:
    """Check that this machine can run instances headless, and say how to fix what cannot."""
    from coordinator.doctor import run_doctor

    return run_doctor(
        _console(),
        load_settings(),
        json_output=json_output,
        claude_bin=claude_bin,
        database_url=database_url,
        config_path=config_path,
    )


async def _with_store(url: str | None, func: Callable[[Any], Any]) -> int:
    return int(await _using_store(url, func))


async def _using_store(url: str | None, func: Callable[[Any], Any]) -> Any:
    """``await func(store)`` on the database of ``url`` (journals replayed first)."""
    from coordinator.db import open_store, resolve_dsn
    from coordinator.db.embedded import left_as_found
    from coordinator.db.journal import replay_journals
    from coordinator.statedir import default_state_dir

    settings = load_settings()
    dsn = settings.database_dsn(url)
    with left_as_found(dsn):  # an embedded server this command started is stopped after
        resolved = await asyncio.to_thread(resolve_dsn, dsn)
        store = await open_store(resolved.dsn)
        try:
            for line in await replay_journals(store, settings.state_dir or default_state_dir()):
                click.echo(line, err=True)
            return await func(store)
        finally:
            await store.close()


@cli.command("status")
@click.argument("orchestration_id", required=False)
@click.option("--watch", is_flag=True, help="Keep refreshing until the run ends.")
@click.option("--json", "json_output", is_flag=True)
@click.option("--database-url")
def status_cmd(
    orchestration_id: str | None, watch: bool, json_output: bool, database_url: str | None
) -> int:
    """The status table of a run (default: the newest), from the database."""
    from coordinator.status import from_db

    console = _console()
    return asyncio.run(
        _with_store(
            database_url,
            lambda store: from_db.status(
                store, console, orchestration_id, watch=watch, json_output=json_output
            ),
        )
    )


@cli.command("report")
@click.argument("orchestration_id", required=False)
@click.option("--json", "json_output", is_flag=True, help="The comparison as JSON.")
@click.option(
    "--html",
    "html",
    type=click.Path(path_type=Path),
    help="Also write the HTML report here (with --compare: the two side by side first).",
)
@click.option(
    "--compare",
    "compare_with",
    metavar="ID2",
    help="A second run (an orchestration id, or a results file) shown side by side.",
)
@click.option(
    "--results",
    "results_file",
    type=click.Path(path_type=Path),
    help="Read the run from this results file instead of the database.",
)
@click.option("--database-url")
def report_cmd(
    orchestration_id: str | None,
    json_output: bool,
    html: Path | None,
    compare_with: str | None,
    results_file: Path | None,
    database_url: str | None,
) -> int:
    """The scenario comparison of a run (default: the newest in the database): quality,
    time, tokens, cost and memory per tier, scaling, recommendations."""
    from coordinator.report.command import ReportRequest, load_runs, show

    req = ReportRequest(
        orchestration_id=orchestration_id,
        results_file=results_file,
        compare_with=compare_with,
        json_output=json_output,
        html=html,
    )
    if req.needs_database:
        runs = asyncio.run(_using_store(database_url, lambda store: load_runs(req, store)))
    else:
        runs = asyncio.run(load_runs(req, None))
    return show(req, runs, _console())


@cli.command("pool")
@click.argument("orchestration_id", required=False)
@click.option("--since", help="Only entries this recent: 30m, 1h, 2h30m.")
@click.option("--instance", "instance", help="Only this instance's entries.")
@click.option("--json", "json_output", is_flag=True)
@click.option("--database-url")
def pool_cmd(
    orchestration_id: str | None,
    since: str | None,
    instance: str | None,
    json_output: bool,
    database_url: str | None,
) -> int:
    """What the instances of a run did (default: the newest run), from the database: files
    written, commands and tests run, milestones, summaries, their own pool entries."""
    from coordinator.pool import query as pool_query

    if since is not None:
        pool_query.parse_since(since)  # a bad value is refused before any database

    async def show(store: Any) -> int:
        orch_id, entries = await pool_query.pool_entries(
            store, orchestration_id, since=since, instance=instance
        )
        render = pool_query.render_json if json_output else pool_query.render_text
        click.echo(render(orch_id, entries))
        return 0

    return asyncio.run(_with_store(database_url, show))


@cli.command("history")
@click.option("--limit", type=click.IntRange(min=1, max=INT64_MAX), default=20, show_default=True)
@click.option("--json", "json_output", is_flag=True)
@click.option("--database-url")
def history_cmd(limit: int, json_output: bool, database_url: str | None) -> int:
    """Past runs, newest first."""
    from coordinator.status import from_db

    console = _console()
    return asyncio.run(
        _with_store(database_url, lambda store: from_db.history(store, console, limit, json_output))
    )


def _control(verb: str, target: tuple[str, ...], wait: float, database_url: str | None) -> int:
    from coordinator.control import client
    from coordinator.control.commands import Verb

    return asyncio.run(
        _with_store(
            database_url,
            lambda store: client.send_and_wait(
                store, Verb(verb), target, wait_s=wait, say=click.echo
            ),
        )
    )


CONTROL_OPTIONS: list[Callable[[F], F]] = [
    click.argument("target", nargs=-1, metavar="[ID] [NAME...]"),
    click.option(
        "--wait",
        type=FiniteFloat(min=0, min_open=True),
        default=15.0,
        show_default=True,
        help="Seconds to wait for the coordinator to acknowledge (then it is withdrawn).",
    ),
    click.option("--database-url"),
]


def control_options(func: F) -> F:
    for option in reversed(CONTROL_OPTIONS):
        func = option(func)
    return func


@cli.command("stop")
@control_options
def stop_cmd(target: tuple[str, ...], wait: float, database_url: str | None) -> int:
    """Stop a running orchestration (default: the newest running), or only the instances
    named, gracefully: they end cancelled, the results are written. Any terminal or host."""
    return _control("stop", target, wait, database_url)


@cli.command("pause")
@control_options
def pause_cmd(target: tuple[str, ...], wait: float, database_url: str | None) -> int:
    """Pause instances (all if none named): their whole process group is stopped until
    unpause; paused time counts against no timeout."""
    return _control("pause", target, wait, database_url)


@cli.command("unpause")
@control_options
def unpause_cmd(target: tuple[str, ...], wait: float, database_url: str | None) -> int:
    """Let paused instances go on (all if none named)."""
    return _control("unpause", target, wait, database_url)


@cli.command("attach")
@click.argument("orchestration_id", required=False)
@click.option("--database-url")
def attach_cmd(orchestration_id: str | None, database_url: str | None) -> int:
    """The live status table of a running orchestration (default: the newest running),
    from the database, until it ends. Ctrl-C leaves it; the run goes on."""
    from coordinator.control import client

    console = _console()
    return asyncio.run(
        _with_store(database_url, lambda store: client.attach(store, console, orchestration_id))
    )


@cli.group("db")
def db_group() -> None:
    """The database: where it is, its schema."""


@db_group.command("url")
@click.option("--database-url")
def db_url_cmd(database_url: str | None) -> int:
    """Print the DSN in use (password masked)."""
    from coordinator.db import resolve_dsn

    resolved = resolve_dsn(load_settings().database_dsn(database_url))
    click.echo(f"{resolved.masked}  ({resolved.source})")
    return 0


@db_group.command("migrate")
@click.option("--database-url")
def db_migrate_cmd(database_url: str | None) -> int:
    """Apply the schema migrations in sql/ (runs also do this on start)."""
    from coordinator.db import migrate_dsn, resolve_dsn

    resolved = resolve_dsn(load_settings().database_dsn(database_url))
    applied = asyncio.run(migrate_dsn(resolved.dsn))
    names = ", ".join(m.name for m in applied) or "nothing to apply"
    click.echo(f"{resolved.masked}: {names}")
    return 0


@db_group.command("stop")
def db_stop_cmd() -> int:
    """Stop the embedded Postgres server (it is otherwise kept between runs)."""
    from coordinator.db import stop_embedded_server

    click.echo("stopped" if stop_embedded_server() else "the embedded server was not running")
    return 0


def main() -> None:
    guard_std_streams()  # a terminal that goes away mid-run must not end the run
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("coordinator: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"coordinator: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else 2)
    except CoordinatorError as exc:
        click.echo(f"coordinator: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("coordinator: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
