"""NO_COLOR, through the console the CLI builds: colour on a terminal unless NO_COLOR is set,
and no escapes at all into a pipe."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from coordinator import cli
from coordinator.budget.rules import Budget, BudgetScope, BudgetUnit
from coordinator.engine.state import Status
from coordinator.status.live import StatusReporter, note_printer
from coordinator.status.render import ReportOptions, render_report
from tests.status.helpers import ANSI, colour_codes, idle_orchestrator, row

ROWS = [
    row(name="ok", status="completed", total_tokens=100, last_event="completed"),
    row(name="bad", status="failed", total_tokens=300, last_event="auth error, retry 3/10"),
    row(name="hold", status="waiting", output_tail=("tail line",)),
]
BUDGETS = [Budget(BudgetScope.OVERALL, BudgetUnit.TOKENS, 500, frozenset({"ok"}), used=400)]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment of a colour terminal (rich reads FORCE_COLOR as one)."""
    for name in ("NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLORTERM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "200")
    return monkeypatch


def everything(console: Console, tmp_path: Path) -> str:
    """All the report prints, captured with the escapes the console would send: the table,
    budget bars, tails, a plain report, a quiet error line, a note."""
    orch = idle_orchestrator(tmp_path, ["bad"])
    bad = orch.states["bad"]
    bad.status = Status.FAILED
    bad.last_event = "exited with code 4 before its result"
    with console.capture() as cap:
        console.print(render_report("t", 1, ROWS, BUDGETS, ReportOptions(max_console_lines=3)))
        StatusReporter(console, 1, ReportOptions(), live=False).final(orch)
        StatusReporter(console, 1, ReportOptions(), quiet=True).final(orch)
        note_printer(console, enabled=True)("overall token budget reached 80%")
    return cap.get()


def same_text(out: str) -> str:
    return re.sub(r" · \d+\.\ds · ", " · _ · ", ANSI.sub("", out))


def test_a_terminal_gets_colour(terminal: pytest.MonkeyPatch, tmp_path: Path) -> None:
    console = cli._console()
    assert console.is_terminal and not console.no_color
    out = everything(console, tmp_path)
    codes = set(colour_codes(out))
    # green completed, red failed and the red error line, cyan waiting, yellow bar and note
    for colour in ("32", "31", "36", "33"):
        assert any(colour in code.split("[")[1].rstrip("m").split(";") for code in codes), (
            colour,
            codes,
        )


def test_no_color_removes_every_colour(terminal: pytest.MonkeyPatch, tmp_path: Path) -> None:
    coloured = everything(cli._console(), tmp_path)
    terminal.setenv("NO_COLOR", "1")
    console = cli._console()
    assert console.is_terminal and console.no_color
    out = everything(console, tmp_path)
    assert colour_codes(out) == []
    # the same report otherwise (bold and dim may stay: they are not colour); the plain
    # report's elapsed time is the clock's, so it may differ
    assert same_text(out) == same_text(coloured)
    assert "auth error, retry 3/10" in out and "! overall token budget reached 80%" in out


def test_a_pipe_gets_no_escapes(terminal: pytest.MonkeyPatch, tmp_path: Path) -> None:
    terminal.delenv("FORCE_COLOR")
    terminal.setattr(sys, "stdout", io.StringIO())  # not a tty
    console = cli._console()
    assert not console.is_terminal
    out = everything(console, tmp_path)
    assert not ANSI.search(out) and "\x1b" not in out
    assert "✗ bad failed: exited with code 4 before its result" in out
