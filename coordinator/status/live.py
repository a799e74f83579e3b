"""Drive the status report while a run goes on: a rich Live display on a terminal, plain
log lines every interval otherwise; ``--quiet`` prints errors only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live

from coordinator.engine.orchestrator import Orchestrator
from coordinator.status.render import (
    ReportOptions,
    header_line,
    plain_lines,
    plain_totals,
    render_report,
)
from coordinator.status.rows import StatusRow, row_from_state
from runner import aio

FAILED = ("failed", "timeout", "blocked")


class StatusReporter:
    def __init__(
        self,
        console: Console,
        interval: float,
        options: ReportOptions,
        *,
        quiet: bool = False,
        live: bool | None = None,
    ) -> None:
        self.console = console
        self.interval = interval
        self.options = options
        self.quiet = quiet
        self.live = console.is_terminal if live is None else live
        self._reported_errors: set[str] = set()

    def rows(self, orch: Orchestrator) -> list[StatusRow]:
        now = time.monotonic()
        return [row_from_state(s, now) for s in orch.states.values()]

    def renderable(self, orch: Orchestrator) -> object:
        return render_report(
            f"coordinator {orch.plan.orchestration_id}",
            time.monotonic() - orch.started_mono,
            self.rows(orch),
            orch.budgets.budgets,
            self.options,
            extra=[*self._sync(orch), *orch.notes[-5:]],
        )

    async def run(self, orch: Orchestrator, done: asyncio.Event) -> None:
        if self.quiet:
            await self._errors_only(orch, done)
            return
        if self.live:
            with Live(
                get_renderable=lambda: self.renderable(orch),  # type: ignore[arg-type,return-value]
                console=self.console,
                refresh_per_second=max(0.2, min(4.0, 1.0 / self.interval)),
                transient=False,
            ):
                await done.wait()
            return
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(done.wait(), self.interval)
            if not done.is_set():
                self._plain(orch)

    def final(self, orch: Orchestrator) -> None:
        if self.quiet:
            self._print_errors(orch)
            return
        if self.live:
            return  # the Live display already shows the final state
        self._plain(orch)

    def _plain(self, orch: Orchestrator) -> None:
        elapsed = time.monotonic() - orch.started_mono
        rows = self.rows(orch)
        self.console.print(
            header_line(f"coordinator {orch.plan.orchestration_id}", elapsed, rows),
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        for line in self._sync(orch):
            self.console.print("  " + line, highlight=False, soft_wrap=True, markup=False)
        for line in [*plain_lines(rows), plain_totals(rows)]:
            self.console.print("  " + line, highlight=False, soft_wrap=True, markup=False)

    @staticmethod
    def _sync(orch: Orchestrator) -> list[str]:
        line = orch.sync_line()
        return [line] if line else []

    async def _errors_only(self, orch: Orchestrator, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(done.wait(), min(self.interval, 1.0))
            self._print_errors(orch)

    def _print_errors(self, orch: Orchestrator) -> None:
        for row in self.rows(orch):
            if row.status in FAILED and row.name not in self._reported_errors:
                self._reported_errors.add(row.name)
                self.console.print(
                    f"{row.icon} {row.name} {row.status}: {row.last_event}",
                    style="red",
                    highlight=False,
                    markup=False,  # model text may hold [brackets]
                )


def note_printer(console: Console, enabled: bool) -> Callable[[str], None]:
    """Budget warnings, sync timeouts and other notes, printed as they happen. Disabled in
    a live display (it shows the latest notes itself) and with ``--quiet``."""

    def _print(text: str) -> None:
        if enabled:
            console.print(
                f"! {text}", style="yellow", highlight=False, markup=False, soft_wrap=True
            )

    return _print
