"""Barrier rules: who is missing, when a point releases, point names, the sync line.

Pure: no I/O, no clock. Both barrier implementations (Postgres and in-memory) call
:func:`decide` with what they read, so the release rule exists exactly once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from coordinator.errors import CoordinatorError

MILESTONE_PREFIX = "milestone:"
STEP_PREFIX = "step:"


class BarrierError(CoordinatorError):
    """The barrier cannot be used as asked (e.g. two processes disagree on the sync mode)."""


# ------------------------------------------------------------------ outcomes and status


@dataclass(frozen=True, slots=True)
class WaitOutcome:
    """How a ``wait()`` ended.

    ``released``: every participant arrived, completed or left. ``timed_out``: the point
    opened because ``timeout_s`` passed since its first arrival; ``missing`` names who had
    not arrived then. Both False only when the barrier was closed under the waiter.
    ``note`` explains an outcome not recorded in the database (unreachable, closed).
    """

    released: bool
    timed_out: bool
    missing: list[str]
    waited_s: float
    note: str | None = None


@dataclass(frozen=True, slots=True)
class PointStatus:
    """One barrier point for the status line and reports."""

    point: str
    arrived: list[str]
    first_arrival_at: datetime
    released_at: datetime | None = None
    timed_out: bool = False
    missing: list[str] = field(default_factory=list)

    @property
    def released(self) -> bool:
        return self.released_at is not None


# ------------------------------------------------------------------ the decision


@dataclass(frozen=True, slots=True)
class Release:
    """Open the point now. ``timed_out`` with the names still missing, or a full release."""

    timed_out: bool
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeepWaiting:
    """Not yet: ``remaining_s`` until the timeout would open it; ``missing`` so far."""

    remaining_s: float
    missing: tuple[str, ...]


Decision = Release | KeepWaiting


def missing(
    participants: Iterable[str], arrived: Collection[str], excused: Collection[str]
) -> tuple[str, ...]:
    """Participants that neither arrived nor are excused (completed or left), sorted."""
    return tuple(sorted({p for p in participants if p not in arrived and p not in excused}))


def decide(
    participants: Iterable[str],
    arrived: Collection[str],
    excused: Collection[str],
    elapsed_s: float,
    timeout_s: float,
) -> Decision:
    """The release rule for one point.

    ``participants``: everyone expected (declared plus registered). ``arrived``: who reached
    the point. ``excused``: who completed (has passed every point) or left (failed, timed
    out, blocked, cancelled: nobody waits for it). ``elapsed_s``: time since the FIRST
    arrival at the point, on one clock (the database server's, for Postgres).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    absent = missing(participants, arrived, excused)
    if not absent:
        return Release(timed_out=False)
    if elapsed_s >= timeout_s:
        return Release(timed_out=True, missing=absent)
    return KeepWaiting(remaining_s=timeout_s - elapsed_s, missing=absent)


# ------------------------------------------------------------------ take-over


def passed_points(
    milestones_reached: Iterable[int], steps_done: int, *, by_steps: bool
) -> list[str]:
    """The points an instance had passed when another process takes it over (its carried
    state: milestones reached, or in lock-step by turns the turns it finished). On rejoining
    they are recorded as its arrivals again (idempotent: its previous holder may have died
    between reaching one and writing it), so they stay passed and nobody waits for it there;
    every later point waits for it. A restarted attempt that reaches one of them again finds
    it released (or releases it) and goes on: it never holds the others there."""
    if by_steps:
        return [step_point(k) for k in range(1, max(0, steps_done) + 1)]
    return milestone_points(p for p in milestones_reached if 0 < p < 100)


def rejoin_wait(passed: Sequence[str], released: Collection[str]) -> str | None:
    """Where a rejoined instance waits before it goes on: at the last point it had passed,
    if that point is not released yet (its previous holder was waiting there); else None."""
    if not passed:
        return None
    last = max(passed, key=point_sort_key)
    return None if last in released else last


def timeouts_of(points: Iterable[PointStatus]) -> list[dict[str, object]]:
    """The sync timeouts as the results list them, from the recorded points (a run whose
    instances ran in several processes: who waited at a timed-out point and who was
    missing)."""
    return [
        {"point": p.point, "instance": name, "missing": list(p.missing)}
        for p in sorted(points, key=lambda p: point_sort_key(p.point))
        if p.timed_out
        for name in p.arrived
    ]


# ------------------------------------------------------------------ point names


def milestone_point(pct: int) -> str:
    """The point an instance reaches at ``pct`` percent: ``milestone:30``."""
    if not 0 < pct < 100:
        raise ValueError(f"a milestone is between 0 and 100 exclusive, got {pct!r}")
    return f"{MILESTONE_PREFIX}{pct}"


def step_point(index: int) -> str:
    """Lock-step point after step ``index`` (1-based, i.e. before sending turn ``index``)."""
    if index < 1:
        raise ValueError(f"steps count from 1, got {index!r}")
    return f"{STEP_PREFIX}{index}"


def milestone_points(milestones: Iterable[int]) -> list[str]:
    return [milestone_point(p) for p in sorted(set(milestones))]


def step_points(max_turns: int) -> list[str]:
    """Every lock-step point of a plan whose longest instance has ``max_turns`` turns."""
    return [step_point(i) for i in range(1, max_turns)]


def point_label(point: str) -> str:
    """``milestone:30`` -> ``30%``, ``step:2`` -> ``step 2``; anything else unchanged."""
    if point.startswith(MILESTONE_PREFIX):
        return point[len(MILESTONE_PREFIX) :] + "%"
    if point.startswith(STEP_PREFIX):
        return "step " + point[len(STEP_PREFIX) :]
    return point


def point_sort_key(point: str) -> tuple[int, int, str]:
    """Milestones by percent, then steps by number, then anything else by name."""
    for rank, prefix in enumerate((MILESTONE_PREFIX, STEP_PREFIX)):
        rest = point[len(prefix) :]
        if point.startswith(prefix) and rest.isdigit():
            return (rank, int(rest), "")
    return (2, 0, point)


# ------------------------------------------------------------------ the status line

RELEASED_MARK = "✓"
TIMED_OUT_MARK = "✗"
WAITING_MARK = "⏳"
NOT_REACHED_MARK = "·"


def render_sync_line(points: Sequence[PointStatus], all_points: Sequence[str]) -> str:
    """``Sync points: ✓ 30% ✓ 50% ⏳ 70% (2/3) · 90%``.

    ``all_points``: the points the plan defines, in order; a point that has a status but is
    not listed (e.g. an extra step) is appended. Timed-out points show who was missing.
    """
    by_name = {p.point: p for p in points}
    order = list(all_points) + sorted(
        (p for p in by_name if p not in set(all_points)), key=point_sort_key
    )
    parts: list[str] = []
    for name in order:
        label = point_label(name)
        status = by_name.get(name)
        if status is None:
            parts.append(f"{NOT_REACHED_MARK} {label}")
        elif status.timed_out:
            who = ", ".join(status.missing)
            parts.append(f"{TIMED_OUT_MARK} {label}" + (f" (timeout: {who})" if who else ""))
        elif status.released:
            parts.append(f"{RELEASED_MARK} {label}")
        else:
            there = len(status.arrived)
            total = there + len(status.missing)
            parts.append(f"{WAITING_MARK} {label} ({there}/{total})")
    return "Sync points: " + (" ".join(parts) if parts else "none")
