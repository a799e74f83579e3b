"""What one line of the status table shows. Built from live state or from the database."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from coordinator.engine.state import InstanceState
from coordinator.limits import usage_text, warning_text

ICONS = {
    "pending": "·",
    "starting": "◌",
    "running": "▶",
    "waiting": "⏳",
    "paused": "⏸",
    "completed": "✓",
    "failed": "✗",
    "timeout": "⏱",
    "cancelled": "⊘",
    "blocked": "⛔",
    "skipped": "↷",
    "lost": "?",
    "retrying": "↻",
    "rate_limited": "⏸",
}
STYLES = {
    "completed": "green",
    "failed": "red",
    "timeout": "red",
    "blocked": "red",
    "cancelled": "yellow",
    "skipped": "yellow",
    "lost": "red",
    "waiting": "cyan",
    "paused": "magenta",
    "running": "bold",
    "retrying": "yellow",
    "rate_limited": "yellow",
}


@dataclass(frozen=True, slots=True)
class StatusRow:
    name: str
    status: str
    duration_s: float
    wait_s: float
    total_tokens: int
    cache_read_tokens: int
    tool_calls: int
    cost_usd: float
    cost_estimated: bool
    progress_pct: float
    last_event: str
    output_tail: tuple[str, ...] = ()
    attempts: int = 1
    usage: str | None = None  # account utilization per window, "5h 82% · 7d 40%"
    usage_warning: str | None = None  # at allowed_warning

    @property
    def icon(self) -> str:
        return ICONS.get(self.status, "?")

    @property
    def name_shown(self) -> str:
        """``worker-2 #3`` from its third attempt on: the table says when one relaunched."""
        return self.name if self.attempts <= 1 else f"{self.name} #{self.attempts}"


def row_from_state(state: InstanceState, now: float | None = None) -> StatusRow:
    now = now or time.monotonic()
    acct = state.accountant
    note = state.wait_text(now)
    return StatusRow(
        name=state.name,
        status=state.status.value,
        duration_s=state.duration_s(now),
        wait_s=state.waiting_s(now),
        total_tokens=acct.usage.total,
        cache_read_tokens=acct.usage.cache_read_tokens,
        tool_calls=acct.tool_call_count,
        cost_usd=acct.cost_usd,
        cost_estimated=acct.cost_is_estimate and acct.messages > 0,
        progress_pct=state.progress.pct,
        last_event=note or state.last_event,
        output_tail=tuple(state.output_tail),
        attempts=state.attempts,
        usage=usage_text(limit) if (limit := state.rate_limit) is not None else None,
        usage_warning=warning_text(limit, now=time.time()) if limit and limit.warning else None,
    )


def vs_median(rows: list[StatusRow]) -> dict[str, float | None]:
    """Each row's tokens relative to the median of rows that have used any."""
    used = [r.total_tokens for r in rows if r.total_tokens > 0]
    median = statistics.median(used) if used else 0
    return {r.name: (r.total_tokens / median if median else None) for r in rows}


def counts(rows: list[StatusRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        key = "running" if row.status in ("starting", "waiting") else row.status
        out[key] = out.get(key, 0) + 1
    return out
