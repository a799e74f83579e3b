"""Per-account gate: closed after a usage-limit rejection until its reset (plus jitter). Pure.

The engine asks :meth:`LimitGate.is_open` before launching or resuming an instance on an
account; a rejection closes that account until :func:`resume_at` of its reset. Several
rejections keep the latest reopening time. Times are epoch seconds (``resetsAt`` is one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_JITTER_S = 5.0
DEFAULT_FALLBACK_S = 60.0


def resume_at(
    resets_at: float | None,
    now: float,
    rng: random.Random | None = None,
    *,
    jitter_s: float = DEFAULT_JITTER_S,
    fallback_s: float = DEFAULT_FALLBACK_S,
) -> float:
    """When to try again: ``resets_at`` plus a jitter in ``[0, jitter_s]`` (never before the
    reset, so instances of one account do not all ask at the same second); a missing reset,
    or one already past, gives ``now + fallback_s`` (plus the jitter)."""
    base = resets_at if resets_at is not None and resets_at > now else now + max(0.0, fallback_s)
    jitter = (rng or random).uniform(0.0, max(0.0, jitter_s)) if jitter_s > 0 else 0.0
    return base + jitter


@dataclass(frozen=True, slots=True)
class Closure:
    """Why and until when an account is closed."""

    open_at: float
    resets_at: float | None
    limit_type: str | None


class LimitGate:
    """Accounts closed by usage limits, each until its reopening time."""

    def __init__(
        self,
        *,
        jitter_s: float = DEFAULT_JITTER_S,
        fallback_s: float = DEFAULT_FALLBACK_S,
        rng: random.Random | None = None,
    ) -> None:
        if jitter_s < 0 or fallback_s < 0:
            raise ValueError("jitter_s and fallback_s must be >= 0")
        self.jitter_s = jitter_s
        self.fallback_s = fallback_s
        self._rng = rng or random.Random()
        self._closed: dict[str, Closure] = {}

    def resume_at(self, resets_at: float | None, now: float) -> float:
        return resume_at(
            resets_at, now, self._rng, jitter_s=self.jitter_s, fallback_s=self.fallback_s
        )

    def reject(
        self, account: str, resets_at: float | None, limit_type: str | None, now: float
    ) -> float:
        """Close ``account`` after a rejection; returns when it opens again (the latest of
        this and any earlier closure still recorded)."""
        closure = Closure(self.resume_at(resets_at, now), resets_at, limit_type)
        current = self._closed.get(account)
        if current is None or closure.open_at > current.open_at:
            self._closed[account] = closure
            return closure.open_at
        return current.open_at

    def open_at(self, account: str) -> float | None:
        """The recorded reopening time (possibly past), None if never closed or released."""
        closure = self._closed.get(account)
        return closure.open_at if closure is not None else None

    def closure(self, account: str) -> Closure | None:
        return self._closed.get(account)

    def is_open(self, account: str, now: float) -> bool:
        closure = self._closed.get(account)
        return closure is None or now >= closure.open_at

    def release(self, account: str) -> None:
        """Forget a closure (e.g. the account answered again)."""
        self._closed.pop(account, None)

    def closed(self, now: float) -> dict[str, Closure]:
        """The accounts still closed at ``now``."""
        return {a: c for a, c in self._closed.items() if now < c.open_at}
