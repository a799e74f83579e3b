"""Turn a validated config plus command-line overrides into a launch plan. Pure.

The plan is everything a run (or a dry-run) needs to know before any process starts:
argv, working directory, session UUID, launch offset, budgets and sync settings.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from coordinator.config.models import (
    BudgetConfig,
    BudgetMode,
    BudgetType,
    Config,
    InstanceConfig,
    PermissionMode,
    ScenarioConfig,
    SyncConfig,
    SyncMode,
)
from coordinator.errors import ConfigError
from coordinator.measure.spec import MeasureSpec, measure_spec
from coordinator.pool.hook import settings_for
from coordinator.pool.identity import identity_env
from coordinator.schedule import stagger_offsets
from coordinator.sessions import session_uuid
from runner.argv import LaunchSpec, build_argv, prompt_fits_argv

if TYPE_CHECKING:
    from coordinator.pool.worktrees import WorktreeSpec

_T = TypeVar("_T")

DEFAULT_PERMISSION_MODE = PermissionMode.ACCEPT_EDITS

PROGRESS_INSTRUCTIONS = (
    "You are one of several Claude Code instances run by a coordinator. "
    "As you work, report progress on a line of its own as 'PROGRESS: NN%' "
    "(NN from 0 to 100) whenever you finish a meaningful part of the task."
)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Command-line overrides; None means 'take the config's value'."""

    orchestration_id: str | None = None
    workspace: Path | None = None
    startup_delay: float | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    status_report_interval: float | None = None
    overall_token_budget: int | None = None
    command_budgets: dict[str, int] = field(default_factory=dict)
    overall_cost_budget: float | None = None
    command_cost_budgets: dict[str, float] = field(default_factory=dict)
    budget_mode: BudgetMode | None = None
    sync_mode: SyncMode | None = None
    permission_mode: PermissionMode | None = None
    start_at: datetime | None = None
    max_attempts: int | None = None
    budget_type: BudgetType | None = None
    output_format: str | None = None  # --output-format; "json" still runs as stream-json
    # a config's instances replaced by a command given on the command line (direct mode)
    replaced_instances: int = 0


@dataclass(frozen=True, slots=True)
class PlannedInstance:
    index: int
    name: str
    description: str | None
    command: str
    slash_command: str | None
    session_id: str
    session_source: str  # "uuid", "name", "derived"
    resume: bool
    turns: tuple[str, ...]
    workspace: Path
    argv: tuple[str, ...]
    env: dict[str, str]
    offset_s: float
    permission_mode: PermissionMode
    token_budget: int | None
    cost_budget_usd: float | None
    scenario: ScenarioConfig | None
    # the turns go to stdin as stream-json: several turns, or one prompt too long for argv
    streams_input: bool = False
    # what later attempts are built from (coordinator.control.attempts)
    launch: LaunchSpec = field(default_factory=lambda: LaunchSpec(session_id="", prompt=None))
    claude_bin: str = "claude"
    max_attempts: int = 1
    permission_given: bool = True  # False: nobody asked for one, the default applies
    json_requested: bool = False  # output_format "json" asked for (it runs as stream-json)
    # CLAUDE_INSTANCE, SCENARIO_ID, ORCHESTRATION_ID, PROJECT_ROOT (coordinator.pool.identity);
    # not secrets, shown as they are; ``env`` (the config's) is applied after them
    identity: dict[str, str] = field(default_factory=dict)
    # isolation worktree: its git worktree and branch (coordinator.pool.worktrees), the
    # workspace above then being inside it
    worktree: WorktreeSpec | None = None
    shares_pool: bool = False  # orchestration.pool.share: every turn goes on stdin
    measure: MeasureSpec = field(default_factory=MeasureSpec)  # verify, memory, time budget

    @property
    def prompt_too_long_for_argv(self) -> bool:
        return len(self.turns) == 1 and self.streams_input and not prompt_fits_argv(self.turns[0])


@dataclass(frozen=True, slots=True)
class RunPlan:
    orchestration_id: str
    config_source: str
    workspace: Path
    instances: tuple[PlannedInstance, ...]
    budget: BudgetConfig
    sync: SyncConfig
    startup_delay: float
    timeout: float | None
    idle_timeout: float
    status_report_interval: float
    start_at: datetime | None
    config: Config
    create_workspaces: bool = False
    retry_backoff_s: float = 10.0
    continue_prompt: str | None = None
    usage_limit_jitter_s: float = 5.0
    usage_limit_fallback_s: float = 300.0
    # what the run does differently from what was asked, said once in dry-run and at start
    notes: tuple[str, ...] = ()

    @property
    def uses_bypass(self) -> bool:
        return any(i.permission_mode is PermissionMode.BYPASS for i in self.instances)

    def by_name(self, name: str) -> PlannedInstance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)


def new_orchestration_id(now: datetime) -> str:
    return f"orch-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def build_plan(
    config: Config,
    options: RunOptions,
    *,
    claude_bin: str,
    config_path: Path | None,
    cwd: Path,
    now: datetime,
    source: str | None = None,
) -> RunPlan:
    orch = config.orchestration
    orchestration_id = options.orchestration_id or orch.id or new_orchestration_id(now)
    base = config_path.parent if config_path is not None else cwd
    if options.workspace is not None:
        workspace = (cwd / options.workspace).resolve()
    elif orch.workspace is not None:
        workspace = (base / orch.workspace).resolve()
    else:
        workspace = cwd.resolve()
    merged = _budget(orch.budget, options)
    budget = _counted(merged)
    sync = (
        orch.sync
        if options.sync_mode is None
        else orch.sync.model_copy(update={"mode": options.sync_mode})
    )
    startup_delay = _pick(options.startup_delay, orch.startup_delay)
    offsets = stagger_offsets(len(config.instances), startup_delay)
    names = config.instance_names()
    instances = tuple(
        _plan_instance(
            i,
            names[i],
            inst,
            orchestration_id,
            workspace,
            offsets[i],
            options,
            config,
            claude_bin,
            budget,
            base,
        )
        for i, inst in enumerate(config.instances)
    )
    shown = source or (str(config_path) if config_path else "<config>")
    _check_sessions_unique(instances, config, shown)
    return RunPlan(
        orchestration_id=orchestration_id,
        config_source=shown,
        workspace=workspace,
        instances=instances,
        budget=budget,
        sync=sync,
        startup_delay=startup_delay,
        timeout=_pick(options.timeout, orch.timeout),
        idle_timeout=_pick(options.idle_timeout, orch.idle_timeout),
        status_report_interval=_pick(options.status_report_interval, orch.status_report_interval),
        start_at=options.start_at,
        config=config,
        create_workspaces=orch.create_workspaces,
        retry_backoff_s=orch.retry_backoff_s,
        continue_prompt=orch.continue_prompt,
        usage_limit_jitter_s=orch.usage_limit_jitter_s,
        usage_limit_fallback_s=orch.usage_limit_fallback_s,
        notes=tuple(_notes(instances, merged, config, options, shown)),
    )


def _plan_instance(
    index: int,
    name: str,
    inst: InstanceConfig,
    orchestration_id: str,
    workspace: Path,
    offset: float,
    options: RunOptions,
    config: Config,
    claude_bin: str,
    budget: BudgetConfig,
    base: Path,
) -> PlannedInstance:
    inst_ws = workspace if inst.workspace is None else (workspace / inst.workspace).resolve()
    session_id = session_uuid(orchestration_id, name, inst.session_id, inst_ws)
    if inst.session_id is None:
        session_source = "derived"
    elif session_id == inst.session_id.lower():
        session_source = "uuid"
    else:
        session_source = "name"
    permission = options.permission_mode or inst.permission_mode or DEFAULT_PERMISSION_MODE
    turns = tuple(inst.turns)
    system_prompt = _system_prompt(inst, config)
    counts_cost = budget.budget_type is not BudgetType.TOKENS
    counts_tokens = budget.budget_type is not BudgetType.COST
    cost_cap = inst.max_cost_usd if counts_cost else None
    overall_cost = budget.overall_cost_usd
    if overall_cost is not None and (cost_cap is None or overall_cost < cost_cap):
        cost_cap = overall_cost  # one instance alone can never exceed the overall budget
    # a shared pool's digest goes with the first turn when it is sent: on stdin
    shares = config.orchestration.pool.share
    on_stdin = len(turns) > 1 or not prompt_fits_argv(turns[0]) or shares
    spec = LaunchSpec(
        session_id=session_id,
        prompt=None if on_stdin else turns[0],
        resume=inst.resumes,
        permission_mode=permission.value,
        allowed_tools=tuple(inst.allowed_tools) if inst.allowed_tools is not None else None,
        disallowed_tools=(
            tuple(inst.disallowed_tools) if inst.disallowed_tools is not None else None
        ),
        model=inst.model,
        max_turns=inst.max_turns,
        append_system_prompt=system_prompt,
        max_budget_usd=cost_cap,
        # pool.conflicts block: a PreToolUse hook asks the coordinator before each write
        extra_args=(
            *(
                ("--settings", settings_for(name))
                if config.orchestration.pool.conflicts == "block"
                else ()
            ),
            *(
                ("--json-schema", orjson.dumps(inst.json_schema).decode())
                if inst.json_schema is not None
                else ()
            ),
        ),
    )
    return PlannedInstance(
        index=index,
        name=name,
        description=inst.description,
        command=inst.command,
        slash_command=inst.slash_command,
        session_id=session_id,
        session_source=session_source,
        resume=inst.resumes,
        turns=turns,
        workspace=inst_ws,
        argv=tuple(build_argv(claude_bin, spec)),
        env={**config.orchestration.env, **inst.env},
        offset_s=offset,
        permission_mode=permission,
        token_budget=inst.max_tokens_per_command if counts_tokens else None,
        cost_budget_usd=inst.max_cost_usd if counts_cost else None,
        scenario=inst.scenario,
        streams_input=on_stdin,
        launch=spec,
        claude_bin=claude_bin,
        max_attempts=options.max_attempts or inst.max_attempts or config.orchestration.max_attempts,
        permission_given=options.permission_mode is not None or inst.permission_mode is not None,
        json_requested=options.output_format == "json"
        or (options.output_format is None and inst.output_format == "json"),
        identity=identity_env(name, inst.scenario, orchestration_id, inst_ws),
        shares_pool=shares,
        measure=measure_spec(index, inst, config.orchestration, base),
    )


def _check_sessions_unique(
    instances: tuple[PlannedInstance, ...], config: Config, source: str
) -> None:
    """Two instances on one session would write into each other's conversation: refuse
    (``session_id: "x"`` on one and an instance named ``x`` without one map alike, as do a
    UUID in two spellings)."""
    seen: dict[str, PlannedInstance] = {}
    for inst in instances:
        first = seen.setdefault(inst.session_id, inst)
        if first is inst:
            continue
        given = config.instances[inst.index].session_id
        raise ConfigError(
            source,
            f"instances[{inst.index}].{'session_id' if given is not None else 'name'}",
            given if given is not None else inst.name,
            f"maps to session {inst.session_id}, the session of instances[{first.index}] "
            f"({first.name}): two instances cannot share a session",
        )


def _system_prompt(inst: InstanceConfig, config: Config) -> str | None:
    parts = []
    if config.orchestration.progress_instructions:
        parts.append(PROGRESS_INSTRUCTIONS)
    if inst.append_system_prompt:
        parts.append(inst.append_system_prompt)
    return "\n\n".join(parts) or None


def _budget(base: BudgetConfig, options: RunOptions) -> BudgetConfig:
    update: dict[str, Any] = {}
    if options.overall_token_budget is not None:
        update["overall_tokens"] = options.overall_token_budget
    if options.command_budgets:
        update["command_budgets"] = {**base.command_budgets, **options.command_budgets}
    if options.overall_cost_budget is not None:
        update["overall_cost_usd"] = options.overall_cost_budget
    if options.command_cost_budgets:
        update["command_cost_budgets"] = {
            **base.command_cost_budgets,
            **options.command_cost_budgets,
        }
    if options.budget_mode is not None:
        update["mode"] = options.budget_mode
    if options.budget_type is not None:
        update["budget_type"] = options.budget_type
    return base.model_copy(update=update) if update else base


def _counted(budget: BudgetConfig) -> BudgetConfig:
    """The budgets that count under ``budget_type``: ``tokens`` drops the USD ones, ``cost``
    the token ones (the notes name what was dropped); ``mixed`` or unset keeps every one."""
    if budget.budget_type is BudgetType.TOKENS:
        return budget.model_copy(update={"overall_cost_usd": None, "command_cost_budgets": {}})
    if budget.budget_type is BudgetType.COST:
        return budget.model_copy(update={"overall_tokens": None, "command_budgets": {}})
    return budget


def _notes(
    instances: tuple[PlannedInstance, ...],
    budget: BudgetConfig,
    config: Config,
    options: RunOptions,
    source: str,
) -> list[str]:
    """One line per thing this run does differently from what its config or flags say (or
    from what the Python orchestrator would do with them)."""
    notes: list[str] = []
    if options.replaced_instances:
        notes.append(
            f"the command given replaces the {options.replaced_instances} instance(s) of "
            f"{source}; its orchestration and budget settings apply"
        )
    as_json = [i.name for i in instances if i.json_requested]
    if as_json:
        notes.append(
            f"output format json runs as stream-json ({_names(as_json)}): live accounting "
            "needs the stream; the final result is in the results JSON"
        )
    defaulted = [i.name for i in instances if not i.permission_given]
    if defaulted:
        notes.append(
            f"no permission_mode for {_names(defaulted)}: {DEFAULT_PERMISSION_MODE.value} "
            f"applies (the Python orchestrator's default is {PermissionMode.BYPASS.value}), "
            "so headless tool calls outside allowed_tools are denied; opt in with "
            f"--permission-mode {PermissionMode.BYPASS.value}"
        )
    dropped = _dropped_budgets(budget, config)
    if dropped:
        kind = budget.budget_type.value if budget.budget_type else ""
        notes.append(f"budget type {kind}: not enforced: {'; '.join(dropped)}")
    return notes


def _dropped_budgets(budget: BudgetConfig, config: Config) -> list[str]:
    if budget.budget_type is BudgetType.TOKENS:
        out = [f"overall ${budget.overall_cost_usd:g}"] if budget.overall_cost_usd else []
        out += [f"{k} ${v:g}" for k, v in budget.command_cost_budgets.items()]
        capped = [i for i in config.instances if i.max_cost_usd is not None]
        if capped:
            out.append(f"max_cost_usd of {len(capped)} instance(s)")
        return out
    if budget.budget_type is BudgetType.COST:
        out = [f"overall {budget.overall_tokens:,} tokens"] if budget.overall_tokens else []
        out += [f"{k} {v:,} tokens" for k, v in budget.command_budgets.items()]
        capped = [i for i in config.instances if i.max_tokens_per_command is not None]
        if capped:
            out.append(f"max_tokens_per_command of {len(capped)} instance(s)")
        return out
    return []


def _names(names: list[str], shown: int = 3) -> str:
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"


def _pick(flag: _T | None, configured: _T) -> _T:
    return configured if flag is None else flag
