"""The decisions on the samples: memory limit and time budget. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    NONE = "none"
    WARN = "warn"  # said once, recorded; the instance goes on
    STOP = "stop"  # the instance is stopped (memory: blocked; time: timeout)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    text: str = ""


def memory_decision(
    rss_mb: float, limit_mb: float | None, *, block: bool, already: bool
) -> Decision:
    """An instance's tree over its memory limit: warned once (``warn`` mode) or stopped
    (``block``, the orchestration's budget mode). ``already``: it crossed before."""
    if limit_mb is None or rss_mb <= limit_mb or already:
        return Decision(Action.NONE)  # (blocked at its first crossing: it is stopping)
    figures = f"memory {rss_mb:,.0f} MB over the limit of {limit_mb:,.0f} MB (memory_limit_mb)"
    if block:
        return Decision(Action.STOP, f"blocked: {figures}")
    return Decision(Action.WARN, figures)


def time_decision(
    worked_s: float, budget_s: float | None, *, enforce: bool, already: bool
) -> Decision:
    """Working time (barrier waits and pauses excluded, as for ``--timeout``) against the
    scenario's time budget: crossing it is said once; enforced, it stops the instance."""
    if budget_s is None or worked_s <= budget_s or already:
        return Decision(Action.NONE)
    text = f"time budget {budget_s:g}s exceeded (scenario.time_budget_seconds)"
    if enforce:
        return Decision(Action.STOP, f"timed out: {text}")
    return Decision(Action.WARN, text)
