"""Typed models of the JSON instance config.

The existing format (``{"instances": [...]}`` with command, name, description, allowed_tools,
permission_mode, output_format, session_id, clear_history, compact_history, pre_commands,
max_tokens_per_command) is accepted unchanged. Everything else is optional and additive.
Unknown fields are errors: a typo must never be silently ignored. Numbers and booleans are
strict: ``"5"`` or ``true`` where a number belongs, ``1`` or ``"yes"`` where a boolean belongs
are errors, not silently converted (an int is still a float); NaN and infinities are refused;
integers fit in 64 bits (Postgres ``bigint``, the results JSON). Names hold no control
characters.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

SESSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
COMMAND_BUDGET_KEY_RE = re.compile(r"^/[A-Za-z0-9][A-Za-z0-9._:-]*$")
ORCHESTRATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ORCHESTRATION_ID_RULE = (
    "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64"
)
INT64_MAX = 2**63 - 1

Int = Annotated[int, Strict(), Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Float = Annotated[float, Strict()]  # an int is accepted; NaN/inf refused by the model config
Flag = Annotated[bool, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0, le=INT64_MAX)]
PositiveTokens = PositiveInt
PositiveUsd = Annotated[float, Strict(), Field(gt=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
PositiveSeconds = PositiveFloat
Seconds = Annotated[float, Strict(), Field(ge=0)]
Percent = Annotated[int, Strict(), Field(gt=0, le=100)]


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


class BudgetType(StrEnum):
    """Which budgets count (the Python orchestrator's ``budget_type``): ``tokens`` only the
    token budgets, ``cost`` only the USD ones, ``mixed`` (like unset) every budget given."""

    TOKENS = "tokens"
    COST = "cost"
    MIXED = "mixed"


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_enum_values=False, allow_inf_nan=False
    )


class ScenarioConfig(_Strict):
    """The simple/medium/complex pattern: carried into results and the offline demo; its time
    budget and expected quality are measured (coordinator/measure/)."""

    difficulty: str = "simple"
    complexity_multiplier: PositiveFloat = 1.0
    input_size: Int | str | None = None
    time_budget_seconds: PositiveSeconds | None = None
    expected_quality: Float | str | None = None
    # the names of the verify metrics that matter (kept in the results with the score)
    quality_metrics: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    # crossing time_budget_seconds stops the instance like a timeout (None: orchestration's)
    enforce_time_budget: Flag | None = None


VERIFY_TIMEOUT_MAX_S = 24 * 3600.0


class VerifyConfig(_Strict):
    """A command run in the instance's workspace after it ends, whose outcome is the
    instance's quality: the pass ratio of a JUnit XML file, else the metrics of a JSON object
    on its last stdout line, else its exit status. An argv list, never a shell."""

    argv: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    timeout_s: Annotated[float, Strict(), Field(gt=0, le=VERIFY_TIMEOUT_MAX_S)] = 120.0
    junit: Annotated[str, Field(min_length=1)] | None = None  # relative to the workspace
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        for index, arg in enumerate(value):
            if "\0" in arg:
                raise ValueError(f"argv[{index}] holds a NUL byte")
        if not value[0].strip():
            raise ValueError("argv[0] (the executable) must not be blank")
        return value

    @field_validator("junit")
    @classmethod
    def _junit_inside(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or "\0" in value:
            raise ValueError("junit must be a path inside the workspace (relative, no '..')")
        return value


def _check_command_key(key: str) -> str:
    if not COMMAND_BUDGET_KEY_RE.fullmatch(key):
        raise ValueError(f"command budget key {key!r} must look like '/command'")
    return key


def with_slash(key: str) -> str:
    """``analyze`` -> ``/analyze``: the Python orchestrator adds the slash a budget key lacks."""
    key = key.strip()
    return key if key.startswith("/") else "/" + key


class BudgetConfig(_Strict):
    overall_tokens: PositiveTokens | None = None
    command_budgets: dict[str, PositiveTokens] = Field(default_factory=dict)
    overall_cost_usd: PositiveUsd | None = None
    command_cost_budgets: dict[str, PositiveUsd] = Field(default_factory=dict)
    mode: BudgetMode = BudgetMode.WARN
    count_cache_reads: Flag = True
    warn_thresholds: list[Percent] = Field(default_factory=lambda: [80, 100])
    budget_type: BudgetType | None = None  # None: every budget given counts
    visuals: Flag = True  # budget bars in the report

    @field_validator("command_budgets", "command_cost_budgets")
    @classmethod
    def _keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key in value:
            _check_command_key(key)
        return value


class LegacyBudgetConfig(_Strict):
    """The Python orchestrator's top-level ``budget`` block, as its configs spell it; the
    loader maps it onto ``orchestration.budget`` (coordinator.config.compat)."""

    overall_budget: PositiveTokens | None = None
    overall_cost_budget: PositiveUsd | None = None
    budget_type: BudgetType | None = None
    enforcement_mode: BudgetMode | None = None
    disable_visuals: Flag | None = None
    command_budgets: dict[str, PositiveTokens] = Field(default_factory=dict)
    command_cost_budgets: dict[str, PositiveUsd] = Field(default_factory=dict)

    @field_validator("command_budgets", "command_cost_budgets")
    @classmethod
    def _keys(cls, value: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, number in value.items():
            slashed = _check_command_key(with_slash(key))
            if slashed in out:
                raise ValueError(f"command budget keys {key!r} and {slashed!r} are the same")
            out[slashed] = number
        return out


class PoolConfig(_Strict):
    """Instances that know about each other (coordinator/pool/): ``share`` gives each
    instance's next turn, and every instance launched later, a digest of what the others
    did; ``conflicts`` says what a second writer of a path gets (warn: a warning; block:
    its write is refused before it happens, by a PreToolUse hook)."""

    share: Flag = False
    conflicts: Literal["warn", "block"] = "warn"


class SyncConfig(_Strict):
    mode: SyncMode = SyncMode.FREE
    milestones: list[Annotated[int, Strict(), Field(gt=0, lt=100)]] = Field(
        default_factory=lambda: [30, 50, 70, 90]
    )
    timeout_s: PositiveSeconds = 60.0

    @field_validator("milestones")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("milestones must be unique")
        return sorted(value)


class OrchestrationConfig(_Strict):
    id: Annotated[str, Field(pattern=ORCHESTRATION_ID_PATTERN)] | None = None
    workspace: Path | None = None
    startup_delay: Seconds = 5.0
    status_report_interval: PositiveSeconds = 5.0
    timeout: PositiveSeconds | None = None
    idle_timeout: PositiveSeconds = 120.0
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    env: dict[str, str] = Field(default_factory=dict)
    progress_instructions: Flag = True
    isolate_config_dir: Flag = False
    create_workspaces: Flag = False
    # attempts: a failed instance is launched again (continuing its session) for transient
    # failures, up to max_attempts launches in all, after retry_backoff_s (doubling)
    max_attempts: PositiveInt = 1
    retry_backoff_s: Seconds = 10.0
    continue_prompt: Annotated[str, Field(min_length=1)] | None = None
    # usage limits: an instance rejected by its account's limit resumes at the reset plus up
    # to this much jitter (a reset the CLI does not give: after usage_limit_fallback_s)
    usage_limit_jitter_s: Seconds = 5.0
    usage_limit_fallback_s: PositiveSeconds = 300.0
    pool: PoolConfig = Field(default_factory=PoolConfig)
    # "worktree": each instance in a git worktree and branch of its own (coordinator/<run>/
    # <name>), made before launch; kept after the run unless keep_worktrees is false
    isolation: Literal["shared", "worktree"] = "shared"
    keep_worktrees: Flag = True
    # measuring each instance (coordinator/measure/): defaults every instance inherits
    verify: VerifyConfig | None = None
    memory_limit_mb: PositiveFloat | None = None
    enforce_time_budget: Flag = False


class InstanceConfig(_Strict):
    # --- the existing format ---
    command: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    description: str | None = None
    allowed_tools: list[str] | None = None
    permission_mode: PermissionMode | None = None
    # "json" is accepted and still runs as stream-json: live accounting needs the stream
    output_format: Literal["stream-json", "json"] = "stream-json"
    session_id: str | None = None
    clear_history: Flag = False
    compact_history: Flag = False
    pre_commands: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    max_tokens_per_command: PositiveTokens | None = None
    # --- additions ---
    resume: Flag = False
    steps: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    workspace: Path | None = None
    model: str | None = None
    max_turns: PositiveInt | None = None
    append_system_prompt: str | None = None
    disallowed_tools: list[str] | None = None
    max_cost_usd: PositiveUsd | None = None
    env: dict[str, str] = Field(default_factory=dict)
    scenario: ScenarioConfig | None = None
    max_attempts: PositiveInt | None = None
    isolation: Literal["shared", "worktree"] | None = None  # None: the orchestration's
    verify: VerifyConfig | None = None  # None: orchestration.verify
    # passed to claude as --json-schema: its result's structured_output is then the
    # instance's self-reported quality (when it has no verify command)
    json_schema: dict[str, Any] | None = None
    memory_limit_mb: PositiveFloat | None = None  # None: orchestration.memory_limit_mb
    # several hosts: only a runner that has every one of these labels claims the instance
    labels: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]] = Field(
        default_factory=list, max_length=16
    )

    @model_validator(mode="before")
    @classmethod
    def _prompt_or_command(cls, data: object) -> object:
        """``prompt`` (the Python orchestrator's alternative to ``command``) is the command:
        exactly one of them."""
        if not isinstance(data, dict):
            return data
        if "prompt" in data and "command" in data:
            raise ValueError("give command or prompt, not both (prompt is another name for it)")
        if "prompt" not in data:
            return data  # no command either: "required field is missing (command or prompt)"
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be non-blank text, not {prompt!r:.60}")
        return {**{k: v for k, v in data.items() if k != "prompt"}, "command": prompt}

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command must not be blank")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("name must not be blank")
        bad = control_character(value)
        if bad is not None:
            raise ValueError(f"name must not hold control characters (U+{ord(bad):04X})")
        return value

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _is_uuid(value) or SESSION_NAME_RE.fullmatch(value):
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
    # the Python orchestrator's block; the loader maps it onto orchestration.budget
    budget: LegacyBudgetConfig | None = None

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


def control_character(text: str) -> str | None:
    """The first control, format, surrogate, private or unassigned character in ``text``:
    a newline or an escape sequence in a name would forge report lines and headers."""
    for char in text:
        if unicodedata.category(char).startswith("C"):
            return char
    return None


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
