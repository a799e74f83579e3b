"""structlog: JSON lines to a log file, human-readable lines on a terminal's stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog


def configure_logging(log_file: Path | None, level: str = "info", console: bool = False) -> None:
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    sinks: list[tuple[TextIO, bool]] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        sinks.append((log_file.open("a", encoding="utf-8"), True))
    if console:
        sinks.append((sys.stderr, False))

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    json_render = structlog.processors.JSONRenderer()
    console_render = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    def fan_out(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        for stream, as_json in sinks:
            render = json_render if as_json else console_render
            stream.write(str(render(logger, name, dict(event_dict))) + "\n")
            stream.flush()
        return ""

    structlog.configure(
        processors=[*processors, fan_out],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
