"""Typed models of the JSON instance config.

The existing format (``{"instances": [...]}`` with command, name, description, allowed_tools,
permission_mode, output_format, session_id, clear_history, compact_history, pre_commands,
max_tokens_per_command) is accepted unchanged. Everything else is optional and additive.
Unknown fields are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SESSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
COMMAND_BUDGET_KEY_RE = re.compile(r"^/[A-Za-z0-9][A-Za-z0-9._:-]*$")

PositiveTokens = Annotated[int, Field(gt=0)]
PositiveUsd = Annotated[float, Field(gt=0)]
Seconds = Annotated[float, Field(ge=0)]


class PermissionMode(StrEnum):
    DEFAULT = "default"
    ACCEPT_EDITS = "acceptEdits"
    PLAN = "plan"
    AUTO = "auto"
    DONT_ASK = "dontAsk"
    BYPASS = "bypassPermissions"


class SyncMode(StrEnum):
    FREE = "free"
    MILESTONE = "milestone"
    LOCKSTEP = "lockstep"


class BudgetMode(StrEnum):
    WARN = "warn"
    BLOCK = "block"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class ScenarioConfig(_Strict):
    """The simple/medium/complex pattern: metadata carried into results and the offline demo."""

    difficulty: str = "simple"
    complexity_multiplier: Annotated[float, Field(gt=0)] = 1.0
    input_size: int | str | None = None
    time_budget_seconds: Annotated[float, Field(gt=0)] | None = None
    expected_quality: float | str | None = None


def _check_command_key(key: str) -> str:
    if not COMMAND_BUDGET_KEY_RE.match(key):
        raise ValueError(f"command budget key {key!r} must look like '/command'")
    return key


class BudgetConfig(_Strict):
    overall_tokens: PositiveTokens | None = None
    command_budgets: dict[str, PositiveTokens] = Field(default_factory=dict)
    overall_cost_usd: PositiveUsd | None = None
    command_cost_budgets: dict[str, PositiveUsd] = Field(default_factory=dict)
    mode: BudgetMode = BudgetMode.WARN
    count_cache_reads: bool = True
    warn_thresholds: list[Annotated[int, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [80, 100]
    )

    @field_validator("command_budgets", "command_cost_budgets")
    @classmethod
    def _keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key in value:
            _check_command_key(key)
        return value


class SyncConfig(_Strict):
    mode: SyncMode = SyncMode.FREE
    milestones: list[Annotated[int, Field(gt=0, lt=100)]] = Field(
        default_factory=lambda: [30, 50, 70, 90]
    )
    timeout_s: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("milestones")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("milestones must be unique")
        return sorted(value)


class OrchestrationConfig(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] | None = None
    workspace: Path | None = None
    startup_delay: Seconds = 5.0
    status_report_interval: Annotated[float, Field(gt=0)] = 5.0
    timeout: Annotated[float, Field(gt=0)] | None = None
    idle_timeout: Annotated[float, Field(gt=0)] = 120.0
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    env: dict[str, str] = Field(default_factory=dict)
    progress_instructions: bool = True
    isolate_config_dir: bool = False
    create_workspaces: bool = False


class InstanceConfig(_Strict):
    # --- the existing format ---
    command: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    description: str | None = None
    allowed_tools: list[str] | None = None
    permission_mode: PermissionMode | None = None
    output_format: Literal["stream-json"] = "stream-json"
    session_id: str | None = None
    clear_history: bool = False
    compact_history: bool = False
    pre_commands: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    max_tokens_per_command: PositiveTokens | None = None
    # --- additions ---
    resume: bool = False
    steps: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    workspace: Path | None = None
    model: str | None = None
    max_turns: Annotated[int, Field(gt=0)] | None = None
    append_system_prompt: str | None = None
    disallowed_tools: list[str] | None = None
    max_cost_usd: PositiveUsd | None = None
    env: dict[str, str] = Field(default_factory=dict)
    scenario: ScenarioConfig | None = None

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command must not be blank")
        return value

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _is_uuid(value) or SESSION_NAME_RE.match(value):
            return value
        raise ValueError(
            "session_id must be a UUID or a name of letters, digits, '.', '_', ':' or '-'"
        )

    @model_validator(mode="after")
    def _resume_needs_session(self) -> InstanceConfig:
        if self.resume and self.session_id is None:
            raise ValueError("resume: true needs a session_id to continue")
        return self

    @property
    def turns(self) -> list[str]:
        """Every prompt this instance sends, in order, as turns of one session."""
        head = ["/compact"] if self.compact_history and self.resumes else []
        return [*head, *self.pre_commands, self.command, *self.steps]

    @property
    def resumes(self) -> bool:
        """Continue an earlier session? ``clear_history`` always starts a fresh one."""
        return self.resume and not self.clear_history

    @property
    def slash_command(self) -> str | None:
        """The slash command this instance's main command starts with, e.g. ``/maketests``."""
        head = self.command.strip().split(maxsplit=1)[0]
        return head if head.startswith("/") and len(head) > 1 else None


class Config(_Strict):
    instances: Annotated[list[InstanceConfig], Field(min_length=1)]
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)

    def duplicate_name(self) -> tuple[int, int, str] | None:
        """(first index, second index, name) of the first clash of instance names."""
        seen: dict[str, int] = {}
        for index, name in enumerate(self.instance_names()):
            if name in seen:
                return seen[name], index, name
            seen[name] = index
        return None

    def instance_names(self) -> list[str]:
        """Names as given, or derived from the command (``/maketests backend`` ->
        ``maketests-backend``), numbered when derived names collide."""
        names: list[str] = []
        derived_count: dict[str, int] = {}
        for inst in self.instances:
            if inst.name is not None:
                names.append(inst.name)
                continue
            base = _slug(inst.command) or "instance"
            derived_count[base] = derived_count.get(base, 0) + 1
            n = derived_count[base]
            names.append(base if n == 1 else f"{base}-{n}")
        return names


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _slug(text: str, limit: int = 40) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text.lower())
    out = "-".join(words)[:limit].strip("-")
    return out
