"""What configs of the Python orchestrator (``zen``) spell differently, mapped onto ours. Pure.

Its configs carry comment keys (``"// Description"``, ``"// Configuration Notes"``: any key
that begins with ``//``) and a top-level ``budget`` block. Comments are dropped wherever they
are; the block is mapped onto ``orchestration.budget``. A field set in both, to different
values, is one error naming both: which one was meant cannot be guessed.
"""

from __future__ import annotations

from typing import Any

from coordinator.config.models import BudgetConfig, Config, LegacyBudgetConfig
from coordinator.errors import ConfigError

COMMENT_PREFIX = "//"

# the block's field -> ours in orchestration.budget
FIELD_MAP = {
    "overall_budget": "overall_tokens",
    "overall_cost_budget": "overall_cost_usd",
    "budget_type": "budget_type",
    "enforcement_mode": "mode",
    "disable_visuals": "visuals",
    "command_budgets": "command_budgets",
    "command_cost_budgets": "command_cost_budgets",
}


def strip_comments(data: Any) -> Any:
    """``data`` without the keys that begin with ``//``, in every object at every depth."""
    if isinstance(data, dict):
        return {
            key: strip_comments(value)
            for key, value in data.items()
            if not (isinstance(key, str) and key.startswith(COMMENT_PREFIX))
        }
    if isinstance(data, list):
        return [strip_comments(item) for item in data]
    return data


def merge_legacy_budget(config: Config, source: str) -> Config:
    """``config`` with its top-level ``budget`` block moved into ``orchestration.budget``."""
    legacy = config.budget
    if legacy is None:
        return config
    ours = config.orchestration.budget
    update: dict[str, Any] = {}
    for theirs_name in sorted(legacy.model_fields_set, key=list(FIELD_MAP).index):
        ours_name = FIELD_MAP[theirs_name]
        value = _as_ours(legacy, theirs_name)
        if isinstance(value, dict):
            merged = dict(getattr(ours, ours_name))
            for key, number in value.items():
                if key in merged and merged[key] != number:
                    theirs_key, ours_key = f"{theirs_name}.{key}", f"{ours_name}.{key}"
                    _conflict(source, theirs_key, number, ours_key, merged[key])
                merged[key] = number
            update[ours_name] = merged
            continue
        if ours_name in ours.model_fields_set and getattr(ours, ours_name) != value:
            given = getattr(legacy, theirs_name)
            _conflict(source, theirs_name, given, ours_name, getattr(ours, ours_name))
        update[ours_name] = value
    budget = BudgetConfig.model_validate({**ours.model_dump(exclude_unset=True), **update})
    orchestration = config.orchestration.model_copy(update={"budget": budget})
    return config.model_copy(update={"orchestration": orchestration, "budget": None})


def _as_ours(legacy: LegacyBudgetConfig, name: str) -> Any:
    value = getattr(legacy, name)
    if name == "disable_visuals":
        return not value if value is not None else True
    return value


def _conflict(source: str, theirs: str, value: Any, ours: str, other: Any) -> None:
    shown = other.value if hasattr(other, "value") else other
    raise ConfigError(
        source,
        f"budget.{theirs}",
        value.value if hasattr(value, "value") else value,
        f"conflicts with orchestration.budget.{ours} = {shown!r}; set it in one of them",
    )
