"""Parse budget flags: ``--command-budget "/cmd=N"``, ``--command-cost-budget "/cmd=1.5"``.

As the Python orchestrator does, a name without its slash gets one (``analyze=5000`` is
``/analyze``); one value may hold several, comma-separated (``"/a=100,/b=200"``, as its guide
writes them) when every part has its ``=``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

from coordinator.config.models import COMMAND_BUDGET_KEY_RE, INT64_MAX, with_slash
from coordinator.errors import UsageError

N = TypeVar("N", int, float)


def parse_command_budgets(
    values: Iterable[str], flag: str, convert: Callable[[str], N]
) -> dict[str, N]:
    out: dict[str, N] = {}
    for raw in _each(values):
        key, sep, number = raw.partition("=")
        key, number = key.strip(), number.strip()
        if not sep or not number:
            raise UsageError(f"{flag} {raw!r}: expected '/command=N' (the number is missing)")
        if not COMMAND_BUDGET_KEY_RE.fullmatch(with_slash(key) if key else key):
            raise UsageError(f"{flag} {raw!r}: {key!r} is not a slash command like '/maketests'")
        key = with_slash(key)
        try:
            value = convert(number)
        except ValueError:
            raise UsageError(f"{flag} {raw!r}: {number!r} is not a number") from None
        if not math.isfinite(value) or value > INT64_MAX:
            raise UsageError(f"{flag} {raw!r}: {number!r} is not a finite number up to 2^63-1")
        if value <= 0:
            raise UsageError(f"{flag} {raw!r}: the budget must be greater than 0")
        out[key] = value
    return out


def _each(values: Iterable[str]) -> Iterable[str]:
    for raw in values:
        parts = raw.split(",")
        if len(parts) > 1 and all("=" in part for part in parts):
            yield from parts
        else:
            yield raw
