"""What is measured for one instance, resolved from its config and the orchestration's."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.config.models import InstanceConfig, OrchestrationConfig


@dataclass(frozen=True, slots=True)
class VerifySpec:
    argv: tuple[str, ...]  # argv[0] resolved: a relative path with a '/' against the config
    timeout_s: float
    junit: str | None  # relative to the workspace
    env: dict[str, str] = field(default_factory=dict)
    field: str = "verify"  # where it was configured, for errors: instances[2].verify, ...


@dataclass(frozen=True, slots=True)
class MeasureSpec:
    verify: VerifySpec | None = None
    memory_limit_mb: float | None = None
    time_budget_s: float | None = None
    enforce_time_budget: bool = False
    expected_quality: float | None = None
    quality_metrics: tuple[str, ...] = ()
    structured_output: bool = False  # claude runs with --json-schema


def measure_spec(
    index: int, inst: InstanceConfig, orch: OrchestrationConfig, base: Path
) -> MeasureSpec:
    """The instance's own settings, else the orchestration's; ``base``: the config's folder."""
    verify_config = inst.verify or orch.verify
    verify = None
    if verify_config is not None:
        where = f"instances[{index}].verify" if inst.verify is not None else "orchestration.verify"
        verify = VerifySpec(
            argv=(resolve_executable(verify_config.argv[0], base), *verify_config.argv[1:]),
            timeout_s=verify_config.timeout_s,
            junit=verify_config.junit,
            env=dict(verify_config.env),
            field=where,
        )
    scenario = inst.scenario
    expected = scenario.expected_quality if scenario is not None else None
    enforce = (
        scenario.enforce_time_budget
        if scenario is not None and scenario.enforce_time_budget is not None
        else orch.enforce_time_budget
    )
    return MeasureSpec(
        verify=verify,
        memory_limit_mb=inst.memory_limit_mb or orch.memory_limit_mb,
        time_budget_s=scenario.time_budget_seconds if scenario is not None else None,
        enforce_time_budget=enforce,
        # a word ("high") is carried in the scenario block but cannot be compared with
        expected_quality=float(expected) if isinstance(expected, int | float) else None,
        quality_metrics=tuple(scenario.quality_metrics) if scenario is not None else (),
        structured_output=inst.json_schema is not None,
    )


def resolve_executable(program: str, base: Path) -> str:
    """Like every path in a config, a relative one (``../.venv/bin/python``) is relative to
    the config file; a bare name (``python3``) is looked up on PATH when it runs."""
    if "/" not in program or Path(program).is_absolute():
        return program
    # normalised, not resolved: a venv's python is a symlink whose target has no venv
    return os.path.abspath(base / program)
