"""Load a config file; every problem becomes one ConfigError line naming file, field, value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from coordinator.config.models import Config
from coordinator.errors import MISSING, ConfigError


def load_config(path: Path) -> Config:
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(shown, "", MISSING, "file not found") from None
    except OSError as exc:
        raise ConfigError(shown, "", MISSING, f"cannot read: {exc.strerror}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line, col = _line_col(raw, exc.pos)
        raise ConfigError(
            shown, f"line {line} column {col}", MISSING, f"invalid JSON: {exc.msg}"
        ) from None
    return parse_config(data, shown)


def parse_config(data: Any, source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(source, "", MISSING, "top level must be a JSON object")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _to_config_error(exc, source) from None
    clash = config.duplicate_name()
    if clash is not None:
        first, second, name = clash
        field = "name" if config.instances[second].name is not None else "command"
        raise ConfigError(
            source,
            f"instances[{second}].{field}",
            name,
            f"duplicate instance name (instances[{first}] has it too)",
        )
    return config


def _to_config_error(exc: ValidationError, source: str) -> ConfigError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = format_loc(first["loc"])
    value: Any = MISSING if first["type"] == "missing" else first.get("input", MISSING)
    if first["type"] == "extra_forbidden":
        problem = "unknown field"
    elif first["type"] == "missing":
        problem = "required field is missing"
    else:
        problem = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"] or (isinstance(value, dict | list) and len(repr(value)) > 80):
        value = MISSING  # the path says where; a huge object says nothing
    more = len(errors) - 1
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(source, path, value, problem)


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_col(raw: bytes, pos: int) -> tuple[int, int]:
    before = raw[:pos]
    line = before.count(b"\n") + 1
    col = pos - (before.rfind(b"\n") + 1) + 1
    return line, col
