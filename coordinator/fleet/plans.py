"""A submitted run's plan, rebuilt on any host from what the database kept of its launch
(the config file and workspaces must be at the same paths there, as for ``resume``), and
the labels each instance asks for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from coordinator import app
from coordinator.claude_bin import find_claude
from coordinator.config.direct import direct_config
from coordinator.config.loader import load_config
from coordinator.db.rows import OrchestrationRow
from coordinator.errors import UsageError
from coordinator.plan import PlannedInstance, RunPlan, build_plan
from coordinator.redact import mask_config
from coordinator.settings import Settings


@dataclass(frozen=True, slots=True)
class StoredRun:
    row: OrchestrationRow
    req: app.RunRequest
    plan: RunPlan
    labels: dict[str, tuple[str, ...]]
    _config_json: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def config_json(self) -> dict[str, Any]:
        """The config as the orchestration row records it (env values masked), built once
        per run for every engine of it a runner holds (each would dump the whole config,
        every instance of the run: ~1.2 MB per engine at 1,000 instances). Read only."""
        if not self._config_json:
            self._config_json.update(mask_config(self.plan.config.model_dump(mode="json")))
        return self._config_json

    def instance(self, name: str) -> PlannedInstance | None:
        return next((i for i in self.plan.instances if i.name == name), None)

    def alone(self, name: str) -> RunPlan:
        """The plan with only ``name`` in it, due now (the queue kept its stagger)."""
        inst = self.instance(name)
        assert inst is not None
        return dataclasses.replace(self.plan, instances=(dataclasses.replace(inst, offset_s=0.0),))


def labels_of(plan: RunPlan) -> dict[str, tuple[str, ...]]:
    configured = plan.config.instances
    out: dict[str, tuple[str, ...]] = {}
    for inst in plan.instances:
        given = configured[inst.index].labels if inst.index < len(configured) else []
        out[inst.name] = tuple(sorted(set(given)))
    return out


def stored_run(
    row: OrchestrationRow, settings: Settings, database_url: str | None, *, need_claude: bool
) -> StoredRun:
    from coordinator.control.resume_run import ResumeRequest, run_request

    launch = row.launch
    if not launch:
        raise UsageError(f"orchestration {row.id} was not submitted to runners (no launch record)")
    req = run_request(launch, ResumeRequest(database_url=database_url, quiet=True), row.id)
    config = load_config(req.config_path) if req.config_path is not None else None
    if req.direct is not None:
        config = direct_config(req.direct, config)
    if config is None:
        raise UsageError(f"orchestration {row.id}: its launch names neither config nor command")
    claude = find_claude(req.claude_bin, settings.claude_bin).path if need_claude else "claude"
    plan = build_plan(
        config,
        req.options,
        claude_bin=claude,
        config_path=req.config_path,
        cwd=Path(launch.get("cwd") or "."),
        now=datetime.now().astimezone(),
        source=None if req.config_path is not None else "(command line)",
    )
    return StoredRun(row, req, plan, labels_of(plan))
