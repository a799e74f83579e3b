"""Did an attempt end on an account usage limit, until when, and how to say it. Pure.

The facts (CLI-FACTS.md next to this file, pinned CLI 2.1.329): with a subscription login
a rejection is a
``rate_limit_event`` with ``status: "rejected"`` followed by a result with ``is_error``,
``api_error_status: 429``, ``api_error: "usage_limit_reached"`` and a text such as "You've
hit your 5-hour limit · resets 10:36am (UTC)" (or "resets Dec 4, 11:26am
(Europe/Berlin)"), in the claude process's time zone, minutes only. An ordinary 429 (an API
key, a per-minute limit) has none of these and is not a usage limit.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from runner.events import RateLimit, Result

USAGE_LIMIT_API_ERROR = "usage_limit_reached"
_HIT = re.compile(r"hit your (?P<what>[\w\s-]+?) limit", re.IGNORECASE)
# The CLI's own names for the windows, as they appear in "You've hit your ... limit".
_TYPE_OF_TEXT = {
    "5-hour": "five_hour",
    "weekly": "seven_day",
    "opus": "seven_day_opus",
    "sonnet": "seven_day_sonnet",
}
_RESET = re.compile(
    r"resets\s+(?:(?P<month>[A-Z][a-z]{2})\s+(?P<day>\d{1,2}),\s+)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]m)"
    r"(?:\s*\((?P<zone>[^)]+)\))?",
    re.IGNORECASE,
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# The text drops seconds: a parsed reset can be up to a minute before the real one.
_TEXT_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class RateLimited:
    """An attempt that ended on an account usage limit."""

    resets_at: float | None  # epoch seconds, None when neither event nor text says
    limit_type: str | None  # five_hour, seven_day, seven_day_opus, ...
    source: str  # "event" (a rejected rate_limit_event) or "result" (the result alone)
    text: str | None = None  # the CLI's own sentence, when the result had one


def limit_of(
    result: Result | None, last_rate_limit: RateLimit | None, *, now: float | None = None
) -> RateLimited | None:
    """A usage limit if the attempt ended on one, else None (an ordinary error or success).

    A rejected last ``rate_limit_event`` decides (unless the attempt still succeeded or the
    event says overage pays: ``isUsingOverage``);
    without one, a result with 429 and ``api_error: usage_limit_reached`` or the "hit your
    ... limit" text does. The reset comes from the event, else from the text (``now``, the
    current epoch time, is needed to place a bare "10:36am" on the right day).
    """
    text = result.text if result is not None else None
    if result is not None and not result.is_error:
        return None
    if last_rate_limit is not None and last_rate_limit.limited:
        resets_at = last_rate_limit.resets_at
        if resets_at is None and text:
            resets_at = parse_reset_text(text, now=_now(now))
        limit_type = last_rate_limit.limit_type or (_type_of_text(text) if text else None)
        return RateLimited(resets_at, limit_type, "event", text)
    if result is None or result.api_error_status != 429:
        return None
    hit = _HIT.search(text or "")
    if result.api_error != USAGE_LIMIT_API_ERROR and hit is None:
        return None
    resets_at = parse_reset_text(text, now=_now(now)) if text else None
    return RateLimited(resets_at, _type_of_text(text) if text else None, "result", text)


def parse_reset_text(text: str, *, now: float, default_zone: str = "UTC") -> float | None:
    """The epoch time of "resets 10:36am (UTC)" / "resets Dec 4, 11:26am (Europe/Berlin)"
    in ``text``: the first such moment not more than a minute before ``now``. None when the
    text has no reset or names a zone this machine does not know."""
    match = _RESET.search(text)
    if match is None:
        return None
    try:
        zone: tzinfo = ZoneInfo((match["zone"] or default_zone).strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None
    hour, minute = int(match["hour"]), int(match["minute"] or 0)
    if not (1 <= hour <= 12 and 0 <= minute <= 59):
        return None
    hour = hour % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    local_now = datetime.fromtimestamp(now, zone)
    earliest = now - _TEXT_SLACK_S
    try:
        if match["month"] is None:
            moment = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if moment.timestamp() < earliest:
                moment += timedelta(days=1)  # aware arithmetic keeps the wall time
            return moment.timestamp()
        month = _MONTHS.index(match["month"].lower()) + 1
        day = int(match["day"])
        moment = local_now.replace(
            month=month, day=day, hour=hour, minute=minute, second=0, microsecond=0
        )
        if moment.timestamp() < earliest - 86400:
            moment = moment.replace(year=moment.year + 1)
        return moment.timestamp()
    except ValueError:  # Feb 30, an unknown month
        return None


def _type_of_text(text: str) -> str | None:
    hit = _HIT.search(text)
    return _TYPE_OF_TEXT.get(hit["what"].strip().lower()) if hit else None


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _clock(epoch: float, zone: tzinfo | None, now: float | None) -> str:
    moment = datetime.fromtimestamp(epoch, zone) if zone else datetime.fromtimestamp(epoch)
    shown = moment.strftime("%H:%M")
    if now is not None and abs(epoch - now) >= 20 * 3600:
        shown = moment.strftime("%b %d ") + shown
    return shown


def limit_text(
    resets_at: float | None,
    limit_type: str | None,
    *,
    now: float | None = None,
    zone: tzinfo | None = None,
) -> str:
    """``rate-limited until 03:10 (five_hour)`` in local time (``zone``, default the
    machine's); a reset 20 h or more from ``now`` gets its date (``Dec 04 03:10``)."""
    text = "rate-limited"
    if resets_at is not None:
        text += f" until {_clock(resets_at, zone, now)}"
    return text + (f" ({limit_type})" if limit_type else "")


def warning_text(event: RateLimit, *, now: float | None = None, zone: tzinfo | None = None) -> str:
    """``usage warning: five_hour limit 82% used, resets 03:10``."""
    text = f"usage warning: {event.limit_type or 'usage'} limit"
    if event.utilization is not None:
        text += f" {_percent(event.utilization)} used"
    if event.resets_at is not None:
        text += f", resets {_clock(event.resets_at, zone, now)}"
    return text


def usage_text(event: RateLimit) -> str | None:
    """``5h 30% · 7d 10%``: utilization per window when known, else the representative's."""
    short = {"five_hour": "5h", "seven_day": "7d"}
    parts = [
        f"{short.get(name, name)} {_percent(window.utilization)}"
        for name, window in event.windows.items()
        if window.utilization is not None
    ]
    if not parts and event.utilization is not None:
        name = event.limit_type or "usage"
        parts = [f"{short.get(name, name)} {_percent(event.utilization)}"]
    return " · ".join(parts) or None


def _percent(fraction: float) -> str:
    return f"{round(fraction * 100)}%"
