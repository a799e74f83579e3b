"""One exception base for the whole project.

Every error a user can cause or meet derives from :class:`CoordinatorError`. The CLI maps
each one to a single line on stderr and the exit code it carries, never a traceback.
"""

from __future__ import annotations

from typing import Any


class CoordinatorError(Exception):
    """Base of every error the coordinator raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class UsageError(CoordinatorError):
    """Bad flags or arguments on the command line."""

    exit_code = 2


class ConfigError(CoordinatorError):
    """An invalid instance config: names the file, the field path and the value."""

    exit_code = 2

    def __init__(self, file: str, path: str, value: Any, problem: str) -> None:
        where = f"{file}: {path}" if path else file
        shown = "" if value is _MISSING else f" = {_short(value)}"
        super().__init__(f"{where}{shown}: {problem}", file=file, path=path, value=value)
        self.file, self.path, self.value, self.problem = file, path, value, problem


class ClaudeNotFoundError(CoordinatorError):
    """No usable claude executable."""

    exit_code = 2


class PreflightError(CoordinatorError):
    """Something that would make every instance fail, found before launching any."""

    exit_code = 2


class DatabaseError(CoordinatorError):
    """Postgres unreachable, migrations refused, or a query failed."""


class StreamError(CoordinatorError):
    """A stream-json line that cannot be used (only raised by strict parsers)."""


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
MISSING: Any = _MISSING


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
