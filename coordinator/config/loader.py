"""Load a config file; every problem becomes one ConfigError line naming file, field, value."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from coordinator.config.compat import merge_legacy_budget, strip_comments
from coordinator.config.models import Config
from coordinator.errors import MISSING, ConfigError

MAX_CONFIG_BYTES = 16 << 20  # a config is small; /dev/zero or a log file is not one


def load_config(path: Path) -> Config:
    shown = str(path)
    return parse_config(read_json(path, shown), shown)


def read_json(path: Path, shown: str) -> Any:
    """The JSON document in ``path``, strictly: UTF-8 (a bad byte is reported at its line),
    no NaN or Infinity, no duplicate keys, integers kept exact."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(shown, "", MISSING, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(shown, "", MISSING, "is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(shown, "", MISSING, f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(shown, "", MISSING, f"larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        raise ConfigError(
            shown,
            f"line {line} column {col}",
            MISSING,
            f"not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
        ) from None
    try:
        orjson.loads(raw)  # strict RFC 8259 with the position of the first problem
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            shown, f"line {exc.lineno} column {exc.colno}", MISSING, f"invalid JSON: {exc.msg}"
        ) from None
    try:  # again for what orjson lets by: a repeated key, an integer beyond 64 bits
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise ConfigError(
            shown, "", MISSING, f"duplicate key {exc.key!r} (a key may appear once per object)"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(shown, "", MISSING, f"invalid JSON: {exc}") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_config(data: Any, source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(source, "", MISSING, "top level must be a JSON object")
    try:
        config = Config.model_validate(strip_comments(data))  # "// ..." keys are comments
    except ValidationError as exc:
        raise _to_config_error(exc, source) from None
    config = merge_legacy_budget(config, source)
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
        if path.startswith("instances[") and path.endswith("].command"):
            problem += " (give command, or prompt)"
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
