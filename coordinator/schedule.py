"""When to start: ``--start-at`` parsing and the stagger. Pure: the clock is a parameter."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

from coordinator.errors import UsageError

_CLOCK = re.compile(r"^(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>am|pm)?$", re.IGNORECASE)
MAX_AHEAD = timedelta(days=366)  # further is a typo (99999h), not a plan
PAST_GRACE = timedelta(seconds=60)  # `date -Iseconds` of a moment ago: start at once
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$", re.IGNORECASE)


def parse_start_at(text: str, now: datetime) -> datetime:
    """Resolve ``--start-at`` against ``now`` (an aware local datetime).

    Accepts ``2am``, ``11:30pm``, ``14:30`` (next occurrence in local time: 2am at 03:00
    means tomorrow), relative ``2h``, ``30m``, ``1h30m``, ``45s``, and ISO 8601. Refused: a
    time in the past (beyond a minute), more than a year ahead, a number out of range.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    value = text.strip()
    if not value:
        raise UsageError("--start-at: empty value")
    duration = _DURATION.fullmatch(value)
    if duration and any(duration.groupdict().values()):
        h, m, s = (int(duration.group(k) or 0) for k in ("h", "m", "s"))
        try:
            return _in_range(now + timedelta(hours=h, minutes=m, seconds=s), now, text)
        except OverflowError:
            raise UsageError(f"--start-at: {text!r} is out of range") from None
    clock = _CLOCK.fullmatch(value)
    if clock:
        return _next_clock_time(clock, now, text)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--start-at: cannot understand {text!r} (use 2am, 14:30, 1h30m or ISO 8601)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    if when < now - PAST_GRACE:
        raise UsageError(
            f"--start-at: {text!r} is in the past (it is {now.isoformat(timespec='seconds')})"
        )
    return _in_range(when, now, text)


def _in_range(when: datetime, now: datetime, text: str) -> datetime:
    if when - now > MAX_AHEAD:
        raise UsageError(
            f"--start-at: {text!r} is more than {MAX_AHEAD.days} days ahead ({when.isoformat()})"
        )
    return when


def _next_clock_time(match: re.Match[str], now: datetime, text: str) -> datetime:
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    ampm = (match.group("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            raise UsageError(f"--start-at: {text!r}: hour must be 1-12 with am/pm")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    elif match.group("m") is None:
        raise UsageError(f"--start-at: {text!r}: a bare number is ambiguous (say 2am or 14:00)")
    if hour > 23 or minute > 59:
        raise UsageError(f"--start-at: {text!r} is not a time of day")
    candidate = datetime.combine(now.date(), time(hour, minute), tzinfo=now.tzinfo)
    if candidate <= now:
        candidate = datetime.combine(
            now.date() + timedelta(days=1), time(hour, minute), tzinfo=now.tzinfo
        )
    return candidate


def stagger_offsets(count: int, startup_delay: float) -> list[float]:
    """Instance i starts ``i * startup_delay`` seconds after the first."""
    return [i * startup_delay for i in range(count)]


def format_countdown(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"
