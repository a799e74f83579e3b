"""Render a launch plan for ``--dry-run``: text for people, JSON for machines."""

from __future__ import annotations

import os
import shlex
from datetime import timedelta
from typing import Any

import orjson

from coordinator.config.models import PermissionMode
from coordinator.plan import PlannedInstance, RunPlan
from coordinator.redact import mask_all, mask_text, secret_values

STDIN_PREVIEW = 120  # characters of a prompt too long for argv shown by the text dry-run


def plan_to_dict(plan: RunPlan, environ: dict[str, str] | None = None) -> dict[str, Any]:
    secrets = _secrets(plan, environ)
    budget = plan.budget
    return {
        "orchestration_id": plan.orchestration_id,
        "config": plan.config_source,
        "workspace": str(plan.workspace),
        "start_at": plan.start_at.isoformat() if plan.start_at else None,
        "startup_delay_s": plan.startup_delay,
        "timeout_s": plan.timeout,
        "sync": {
            "mode": plan.sync.mode.value,
            "milestones": plan.sync.milestones,
            "timeout_s": plan.sync.timeout_s,
        },
        "budget": {
            "mode": budget.mode.value,
            "overall_tokens": budget.overall_tokens,
            "command_budgets": budget.command_budgets,
            "overall_cost_usd": budget.overall_cost_usd,
            "command_cost_budgets": budget.command_cost_budgets,
            "count_cache_reads": budget.count_cache_reads,
            "budget_type": budget.budget_type.value if budget.budget_type else None,
            "visuals": budget.visuals,
        },
        "bypass_permissions": plan.uses_bypass,
        "instances": [_instance(inst, plan, secrets) for inst in plan.instances],
    }


def _instance(inst: PlannedInstance, plan: RunPlan, secrets: list[str]) -> dict[str, Any]:
    argv = [mask_text(a, secrets) for a in inst.argv]
    return {
        "name": inst.name,
        "description": inst.description,
        "session_id": inst.session_id,
        "session_source": inst.session_source,
        "resume": inst.resume,
        "workspace": str(inst.workspace),
        "offset_s": inst.offset_s,
        "launch_at": (
            (plan.start_at + timedelta(seconds=inst.offset_s)).isoformat()
            if plan.start_at
            else None
        ),
        "argv": argv,
        "command_line": shlex.join(argv),
        "stdin_turns": list(inst.turns) if inst.streams_input else [],
        "prompt_on_stdin_because_too_long": inst.prompt_too_long_for_argv,
        # CLAUDE_INSTANCE, SCENARIO_ID, ...: shown as they are, unless the config's env
        # sets one (then it is there, masked, and wins)
        "identity_env": {k: v for k, v in inst.identity.items() if k not in inst.env},
        "env": mask_all(inst.env),  # every config env value is a secret
        "worktree": (
            {
                "branch": inst.worktree.branch,
                "path": str(inst.worktree.path),
                "repository": str(inst.worktree.repo) if inst.worktree.repo else None,
            }
            if inst.worktree is not None
            else None
        ),
        "permission_mode": inst.permission_mode.value,
        "token_budget": inst.token_budget,
        "cost_budget_usd": inst.cost_budget_usd,
        "command_budget": plan.budget.command_budgets.get(inst.slash_command or "", None),
        "scenario": inst.scenario.model_dump() if inst.scenario else None,
        "verify": _verify(inst, secrets),
        "memory_limit_mb": inst.measure.memory_limit_mb,
        "time_budget": {
            "seconds": inst.measure.time_budget_s,
            "enforced": inst.measure.enforce_time_budget,
        },
    }


def _verify(inst: PlannedInstance, secrets: list[str]) -> dict[str, Any] | None:
    verify = inst.measure.verify
    if verify is None:
        return None
    argv = [mask_text(a, secrets) for a in verify.argv]
    return {
        "argv": argv,
        "command_line": shlex.join(argv),
        "timeout_s": verify.timeout_s,
        "junit": verify.junit,
        "env": mask_all(verify.env),
        "from": verify.field,
    }


def render_json(plan: RunPlan, environ: dict[str, str] | None = None) -> str:
    return orjson.dumps(plan_to_dict(plan, environ), option=orjson.OPT_INDENT_2).decode()


def render_text(plan: RunPlan, environ: dict[str, str] | None = None) -> str:
    data = plan_to_dict(plan, environ)
    lines = [
        f"Dry run: orchestration {data['orchestration_id']} ({len(plan.instances)} instances)",
        f"  config     {data['config']}",
        f"  workspace  {data['workspace']}",
        f"  start      {data['start_at'] or 'now'}; stagger {plan.startup_delay:g}s",
        f"  sync       {plan.sync.mode.value}"
        + (
            f" at {', '.join(f'{m}%' for m in plan.sync.milestones)}, timeout "
            f"{plan.sync.timeout_s:g}s"
            if plan.sync.mode.value != "free"
            else ""
        ),
        f"  budget     {_budget_line(plan)}",
    ]
    if plan.uses_bypass:
        lines.append(
            "  WARNING    bypassPermissions requested: instances run every tool without asking"
        )
    for inst, row in zip(plan.instances, data["instances"], strict=True):
        lines.append("")
        lines.append(
            f"[{inst.index + 1}] {inst.name}"
            + (f" - {inst.description}" if inst.description else "")
        )
        lines.append(f"    session    {inst.session_id} ({_session_note(inst)})")
        lines.append(f"    cwd        {inst.workspace}")
        if inst.worktree is not None:
            where = row["worktree"]["repository"] or "NOT A GIT REPOSITORY"
            lines.append(f"    worktree   branch {inst.worktree.branch} of {where}")
        offset = f"+{inst.offset_s:g}s"
        if row["launch_at"] is not None:
            offset += f" ({row['launch_at']})"
        lines.append(f"    launch     {offset}")
        lines.append(f"    permission {inst.permission_mode.value}")
        if row["token_budget"] or row["command_budget"]:
            parts = []
            if row["token_budget"]:
                parts.append(f"instance {row['token_budget']:,} tokens")
            if row["command_budget"]:
                parts.append(f"{inst.slash_command} {row['command_budget']:,} tokens (shared)")
            lines.append(f"    budget     {'; '.join(parts)}")
        if row["identity_env"]:
            lines.append(
                "    identity   "
                + " ".join(f"{k}={shlex.quote(v)}" for k, v in row["identity_env"].items())
            )
        if row["env"]:
            lines.append(
                "    env        " + " ".join(f"{k}={shlex.quote(v)}" for k, v in row["env"].items())
            )
        lines.append(f"    $ {row['command_line']}")
        lines.extend(_measure_lines(row))
        for n, turn in enumerate(row["stdin_turns"], 1):
            if row["prompt_on_stdin_because_too_long"]:
                size = len(turn.encode(errors="replace"))
                clipped = turn[:STDIN_PREVIEW].replace("\n", " ")
                lines.append(
                    f"      turn {n} (stdin: {size:,} bytes, too long for an argument): {clipped}…"
                )
            else:
                lines.append(f"      turn {n} (stdin): {turn}")
    return "\n".join(lines)


def _measure_lines(row: dict[str, Any]) -> list[str]:
    out = []
    verify = row["verify"]
    if verify is not None:
        junit = f", junit {verify['junit']}" if verify["junit"] else ""
        out.append(
            f"    verify     $ {verify['command_line']} (timeout {verify['timeout_s']:g}s{junit})"
        )
    parts = []
    if row["memory_limit_mb"] is not None:
        parts.append(f"memory limit {row['memory_limit_mb']:g} MB")
    budget = row["time_budget"]
    if budget["seconds"] is not None:
        parts.append(
            f"time budget {budget['seconds']:g}s" + (" (enforced)" if budget["enforced"] else "")
        )
    if parts:
        out.append("    measure    " + "; ".join(parts))
    return out


def _session_note(inst: PlannedInstance) -> str:
    if inst.session_source == "uuid":
        return "given" + (", resumed" if inst.resume else "")
    if inst.session_source == "name":
        return "mapped from session name + workspace, the same in every run" + (
            ", resumed" if inst.resume else ""
        )
    return "derived from orchestration id + name"


def _budget_line(plan: RunPlan) -> str:
    b = plan.budget
    parts = []
    if b.overall_tokens:
        parts.append(f"overall {b.overall_tokens:,} tokens")
    parts += [f"{k} {v:,} tokens" for k, v in b.command_budgets.items()]
    if b.overall_cost_usd:
        parts.append(f"overall ${b.overall_cost_usd:g}")
    parts += [f"{k} ${v:g}" for k, v in b.command_cost_budgets.items()]
    if not parts:
        return "none"
    return f"{b.mode.value}: " + ", ".join(parts)


def _secrets(plan: RunPlan, environ: dict[str, str] | None) -> list[str]:
    env = dict(os.environ if environ is None else environ)
    config_env: dict[str, str] = {}
    for inst in plan.instances:
        env.update(inst.env)
        config_env.update(inst.env)
    return secret_values(env, config_env)


def bypass_refusal(plan: RunPlan, euid: int, environ: dict[str, str]) -> str | None:
    """Why the run must not start (root + bypassPermissions without IS_SANDBOX=1), or None."""
    if euid != 0 or environ.get("IS_SANDBOX") == "1":
        return None
    names = [i.name for i in plan.instances if i.permission_mode is PermissionMode.BYPASS]
    if not names:
        return None
    return (
        f"bypassPermissions as root is refused by claude for instance(s) {', '.join(names)}: "
        "set IS_SANDBOX=1 if this machine is a sandbox, or use another permission mode"
    )
