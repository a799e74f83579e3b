"""structlog: JSON lines to a log file; on stderr (off a terminal) warnings and errors only.

Libraries' own logging (asyncpg's reconnect tracebacks, asyncio's) goes to the log file
only: what the user sees of a fault is the one line the coordinator writes about it."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog


def configure_logging(
    log_file: Path | None,
    level: str = "info",
    console: bool = False,
    console_level: str = "warning",
) -> None:
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    sinks: list[tuple[TextIO, bool, int]] = []  # (stream, as JSON, lowest level)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        sinks.append((log_file.open("a", encoding="utf-8"), True, lvl))
    if console:
        shown = logging.getLevelName(console_level.upper())
        sinks.append((sys.stderr, False, max(lvl, shown if isinstance(shown, int) else 30)))

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    json_render = structlog.processors.JSONRenderer()
    console_render = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    def fan_out(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        level = logging.getLevelName(str(event_dict.get("level", "info")).upper())
        for stream, as_json, lowest in sinks:
            if isinstance(level, int) and level < lowest:
                continue
            render = json_render if as_json else console_render
            stream.write(str(render(logger, name, dict(event_dict))) + "\n")
            stream.flush()
        return ""

    _route_stdlib_logging(sinks[0][0] if sinks and sinks[0][1] else None, lvl)
    structlog.configure(
        processors=[*processors, fan_out],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


class _JsonFileHandler(logging.Handler):
    """A library's log record as one JSON line in the log file (traceback included)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry: dict[str, Any] = {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            }
            if record.exc_info:
                entry["exception"] = logging.Formatter().formatException(record.exc_info)
            self.stream.write(json.dumps(entry) + "\n")
            self.stream.flush()
        except Exception:  # a log line must never break the run
            self.handleError(record)


def _route_stdlib_logging(stream: TextIO | None, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _JsonFileHandler | logging.NullHandler):
            root.removeHandler(handler)
    root.addHandler(_JsonFileHandler(stream) if stream is not None else logging.NullHandler())
    root.setLevel(level)
