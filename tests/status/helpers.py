"""Shared pieces for the status report tests: rows, states fed with real stream lines, a
console that records what it prints and lets a test await a line without sleeping."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from coordinator.config import parse_config
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import InstanceState
from coordinator.plan import RunOptions, RunPlan, build_plan
from coordinator.status.rows import StatusRow
from runner.events import parse_line
from tests.engine.helpers import REPLAY

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SGR = re.compile(r"\x1b\[([0-9;]*)m")

BASE_ROW = StatusRow(
    name="x",
    status="running",
    duration_s=1.0,
    wait_s=0.0,
    total_tokens=0,
    cache_read_tokens=0,
    tool_calls=0,
    cost_usd=0.0,
    cost_estimated=False,
    progress_pct=0.0,
    last_event="",
)


def row(**changes: Any) -> StatusRow:
    return replace(BASE_ROW, **changes)


def colour_codes(text: str) -> list[str]:
    """Every SGR sequence in ``text`` that sets a foreground or background colour."""
    found = []
    for match in SGR.finditer(text):
        params = [int(p) for p in match.group(1).split(";") if p]
        if any(30 <= p <= 38 or 40 <= p <= 48 or 90 <= p <= 97 or 100 <= p <= 107 for p in params):
            found.append(match.group(0))
    return found


def render_plain(renderable: RenderableType, width: int = 200) -> str:
    """What a pipe gets: no terminal, no colour."""
    console = Console(
        file=io.StringIO(), width=width, force_terminal=False, color_system=None, record=True
    )
    console.print(renderable)
    return console.export_text()


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def line_for(text: str, name: str) -> str:
    """The table line of instance ``name``: its icon (none for the totals), then the name."""
    pattern = re.compile(rf"^(?:\S\s+|\s+){re.escape(name)}(?:\s|$)")
    hits = [line for line in lines_of(text) if pattern.match(line)]
    assert len(hits) == 1, f"expected one line for {name!r} in:\n{text}"
    return hits[0]


def make_plan(tmp_path: Path, names: list[str], **orchestration: Any) -> RunPlan:
    config = parse_config(
        {
            "orchestration": {"startup_delay": 0, "progress_instructions": False, **orchestration},
            "instances": [{"name": n, "command": "go"} for n in names],
        }
    )
    return build_plan(
        config,
        RunOptions(orchestration_id="t"),
        claude_bin=REPLAY,
        config_path=None,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )


def idle_orchestrator(tmp_path: Path, names: list[str], **orchestration: Any) -> Orchestrator:
    """A real Orchestrator that is never run: its states are set by hand."""
    return Orchestrator(
        make_plan(tmp_path, names, **orchestration), base_env={}, limits=Limits(), guardian=False
    )


def feed(state: InstanceState, *raw: bytes) -> None:
    """Account stream lines the way the engine does (tokens, tools, progress)."""
    for line in raw:
        event = parse_line(line)
        assert event is not None, line
        state.accountant.feed(event)
        state.progress.feed(event)


class WatchedFile(io.StringIO):
    """A console file a test can await: ``await f.until(pred)`` returns once what was
    written satisfies ``pred``. Writes come from the event loop's thread (plain mode)."""

    def __init__(self) -> None:
        super().__init__()
        self._written = asyncio.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        self._written.set()
        return n

    async def until(self, pred: Callable[[str], bool], timeout: float = 20.0) -> str:
        async def wait() -> str:
            while not pred(self.getvalue()):
                self._written.clear()
                await self._written.wait()
            return self.getvalue()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"never written; output so far:\n{self.getvalue()}") from None
