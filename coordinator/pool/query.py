"""``coordinator pool``: the entries of a run, from the database, in the seed's terms
(``--since 1h --instance A``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from coordinator.db.store import Store
from coordinator.errors import UsageError
from coordinator.pool.entries import PoolEntry

SINCE = re.compile(r"^(?:(\d{1,4})h)?(?:(\d{1,5})m)?(?:(\d{1,6})s)?$")


def parse_since(text: str) -> timedelta:
    """``30m``, ``1h``, ``2h30m``, ``90s``: how far back."""
    match = SINCE.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise UsageError(f"--since {text!r}: give a duration like 30m, 1h or 2h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    delta = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if delta.total_seconds() <= 0:
        raise UsageError(f"--since {text!r}: the duration must be more than zero")
    return delta


async def pool_entries(
    store: Store,
    orchestration_id: str | None,
    *,
    since: str | None = None,
    instance: str | None = None,
    now: datetime | None = None,
) -> tuple[str, list[PoolEntry]]:
    after = (now or datetime.now(UTC)) - parse_since(since) if since is not None else None
    if orchestration_id is None:
        orchestration_id = await store.latest_orchestration_id()
        if orchestration_id is None:
            raise UsageError("no orchestration recorded in this database yet")
    elif await store.get_orchestration(orchestration_id) is None:
        raise UsageError(f"orchestration {orchestration_id!r} not found in the database")
    rows = await store.list_pool_entries(orchestration_id, since=after, instance=instance)
    return orchestration_id, rows


def render_text(orchestration_id: str, entries: list[PoolEntry]) -> str:
    lines = [
        f"pool of {orchestration_id}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    ]
    for entry in entries:
        stamp = datetime.fromtimestamp(entry.at_unix, UTC).astimezone().strftime("%H:%M:%S")
        lines.append(f"{stamp} {entry.kind.value:<9} {entry.line()}")
    return "\n".join(lines)


def render_json(orchestration_id: str, entries: list[PoolEntry]) -> str:
    doc: dict[str, Any] = {
        "orchestration_id": orchestration_id,
        "entries": [e.as_dict() for e in entries],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
