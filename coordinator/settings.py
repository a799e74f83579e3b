"""Settings from ``COORDINATOR_*`` environment variables and ``.env``; CLI flags override."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COORDINATOR_", env_file=".env", extra="ignore", frozen=True
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

    def database_dsn(self, flag: str | None) -> str | None:
        """``--database-url`` if given, else COORDINATOR_DATABASE_URL / DATABASE_URL; None
        means the embedded server."""
        if flag:
            return flag
        return self.database_url.get_secret_value() if self.database_url else None


def load_settings() -> Settings:
    return Settings()
