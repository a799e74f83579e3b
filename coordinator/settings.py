"""Settings from ``COORDINATOR_*`` environment variables and ``.env``; CLI flags override.

Read strictly: a ``.env`` line that cannot be parsed, a boolean that is not one
(``COORDINATOR_NO_DATABASE=maybe``) or an unknown log level is one UsageError line naming
the variable (exit 2), never a traceback and never silently ignored. Empty values count as
unset. Values are not echoed (a ``.env`` holds secrets).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from dotenv.parser import parse_stream
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coordinator.errors import UsageError

ENV_FILE = Path(".env")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COORDINATOR_",
        env_file=ENV_FILE,
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )

    claude_bin: str | None = None
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("COORDINATOR_DATABASE_URL", "DATABASE_URL"),
    )
    state_dir: Path | None = None
    log_file: Path | None = None
    log_level: str = "info"
    no_database: bool = False
    # How long the final flush waits for a database that went away before journalling.
    db_close_timeout: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    # A run whose coordinator sent no heartbeat for this long is shown as lost.
    lease_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    # A runner reads the sums of the runs it holds this often, for shared budgets (a
    # crossing another runner saw arrives sooner, pushed: coordinator/fleet/alarm.py).
    budget_poll_s: float = Field(default=0.1, gt=0, allow_inf_nan=False)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"not a log level (use {', '.join(LOG_LEVELS)})")
        return value.lower()

    def database_dsn(self, flag: str | None) -> str | None:
        """``--database-url`` if given, else COORDINATOR_DATABASE_URL / DATABASE_URL; None
        means the embedded server."""
        if flag:
            return flag
        return self.database_url.get_secret_value() if self.database_url else None


def load_settings() -> Settings:
    check_env_file(ENV_FILE)
    try:
        return Settings()
    except ValidationError as exc:
        raise _settings_error(exc) from None


def check_env_file(path: Path) -> None:
    """A ``.env`` that python-dotenv would half-read (it skips what it cannot parse, with a
    warning) is refused at its first bad line."""
    if not path.is_file():
        return
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise UsageError(
                f"{path}: line {binding.original.line}: cannot parse (expected NAME=value)"
            )


def _settings_error(exc: ValidationError) -> UsageError:
    first = exc.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    name = field if field.isupper() else f"COORDINATOR_{field.upper()}"
    where = "environment" if name in os.environ else str(ENV_FILE)
    problem = str(first["msg"]).removeprefix("Value error, ")
    shown = "" if field == "database_url" else f" = {first.get('input')!r}"
    return UsageError(f"{name}{shown} ({where}): {problem}")
