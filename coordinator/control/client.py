"""The sending side, behind ``coordinator stop|pause|unpause [ID] [NAME...]`` and
``coordinator attach [ID]``: find the orchestration, make sure a live coordinator owns it,
queue the command and wait (bounded) for its acknowledgement. From any terminal or host
that reaches the database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pydantic import ValidationError
from rich.console import Console

from coordinator.config.models import Config
from coordinator.control.channel import PostgresChannel
from coordinator.control.commands import (
    ControlCommand,
    ControlError,
    Known,
    NoAckError,
    Verb,
    check_names,
    choose_target,
    outcome_lines,
)
from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import OrchestrationRow
from coordinator.status import from_db
from runner import aio

NEWEST_SCANNED = 100  # how far back "the newest running orchestration" is looked for
AFTER_TAKEN_S = 5.0  # taken when the wait ran out: how much longer its ack is waited for


def requested_by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def instance_names(store: PostgresStore, orch: OrchestrationRow) -> tuple[list[str], bool]:
    """The run's instance names, and whether that list is certainly complete (from its
    recorded config; else only the instances that have rows so far)."""
    rows = [r.name for r in await store.list_instances(orch.id)]
    try:
        names = Config.model_validate(orch.config).instance_names()
    except (ValidationError, TypeError, ValueError):
        return rows, False
    return names + [n for n in rows if n not in names], True


def refuse_unless_live(orch: OrchestrationRow, then: str = "; nothing was sent") -> None:
    """One line when no live coordinator owns the run (finished, or lost)."""
    if orch.status == "running":
        return
    if orch.status == "lost":
        shown = from_db.shown_status(orch, datetime.now(UTC))
        raise ControlError(f"orchestration {orch.id}: no live coordinator owns it ({shown}){then}")
    raise ControlError(f"orchestration {orch.id} is not running ({orch.status}){then}")


async def refuse_unless_served(store: PostgresStore, orch: OrchestrationRow) -> None:
    """A one-host run needs its live coordinator; a fleet run (submitted, or ``run
    --fleet``) needs one live runner, which takes the command for every runner."""
    from coordinator.fleet.store import FleetDb

    fleet = FleetDb(store.pool)
    if await fleet.fleet_kind(orch.id) is None:
        refuse_unless_live(orch)
        return
    if orch.status not in ("queued", "running", "lost"):
        raise ControlError(
            f"orchestration {orch.id} is not running ({orch.status}); nothing was sent"
        )
    if await fleet.live_runners() == 0:
        raise ControlError(
            f"orchestration {orch.id}: no live runner serves it (start `coordinator runner`); "
            "nothing was sent"
        )


async def resolve(store: PostgresStore, args: Sequence[str]) -> tuple[OrchestrationRow, list[str]]:
    """The orchestration an ``[ID] [NAME...]`` command line means, and the names."""
    recent = await store.list_orchestrations(NEWEST_SCANNED)
    running = next((o for o in recent if o.status == "running"), None)
    first = await store.get_orchestration(args[0]) if args else None
    if not args and running is None and recent and recent[0].status == "lost":
        refuse_unless_live(recent[0])  # the newest one lost its coordinator: say so
    newest_names = (await instance_names(store, running))[0] if running is not None else []
    target = choose_target(
        args,
        Known(
            first_is_orchestration=first is not None,
            newest_running=running.id if running is not None else None,
            newest_names=tuple(newest_names),
        ),
    )
    orch = first if first is not None and first.id == target.orchestration_id else running
    assert orch is not None
    return orch, list(target.names)


async def send_and_wait(
    store: PostgresStore,
    verb: Verb,
    args: Sequence[str],
    *,
    wait_s: float,
    say: Callable[[str], None],
    poll_s: float = 0.1,
) -> int:
    """Queue the command, wait for its acknowledgement, print one line per instance.
    ControlError (exit 2): unknown run or name, no live coordinator, refused by it.
    NoAckError (exit 1): no acknowledgement within ``wait_s`` (then it is withdrawn, so
    it is never applied later, or it was taken and the line says it may have been)."""
    orch, names = await resolve(store, args)
    await refuse_unless_served(store, orch)
    known, complete = await instance_names(store, orch)
    if complete:
        check_names(orch.id, names, known)
    channel = PostgresChannel.on_pool(store.pool)
    try:
        sent = await channel.send(orch.id, verb, names, requested_by())
        try:
            acked = await _wait_for_ack(store, channel, sent, wait_s, poll_s)
        except asyncio.CancelledError:  # Ctrl-C: withdrawn if nobody took it yet
            await aio.wait_for(asyncio.shield(channel.withdraw(sent.id)), 3.0)
            raise
    finally:
        await channel.close()
    if acked.error:
        raise ControlError(f"orchestration {orch.id}: {acked.error}")
    for line in outcome_lines(acked.outcome or {}):
        say(line)
    return 0


async def _wait_for_ack(
    store: PostgresStore,
    channel: PostgresChannel,
    sent: ControlCommand,
    wait_s: float,
    poll_s: float,
) -> ControlCommand:
    deadline = time.monotonic() + wait_s
    next_check = time.monotonic() + 1.0
    while True:
        row = await channel.get(sent.id)
        if row is not None and row.acked_at is not None:
            return row
        now = time.monotonic()
        if now >= next_check:  # its coordinator may have died since
            next_check = now + 1.0
            orch = await store.get_orchestration(sent.orchestration_id)
            gone = orch is not None and orch.status not in ("running", "queued")
            if gone and orch is not None and await channel.withdraw(sent.id):
                refuse_unless_live(orch)
        if now >= deadline:
            break
        await asyncio.sleep(poll_s)
    if await channel.withdraw(sent.id):
        raise NoAckError(
            f"orchestration {sent.orchestration_id}: its coordinator did not acknowledge the "
            f"{sent.verb.value} within {wait_s:g}s; the command was withdrawn (not applied)"
        )
    later = time.monotonic() + AFTER_TAKEN_S
    while time.monotonic() < later:
        row = await channel.get(sent.id)
        if row is not None and row.acked_at is not None:
            return row
        await asyncio.sleep(poll_s)
    raise NoAckError(
        f"orchestration {sent.orchestration_id}: its coordinator took the {sent.verb.value} "
        f"but did not acknowledge it within {wait_s + AFTER_TAKEN_S:g}s; it may have been applied"
    )


async def attach(
    store: PostgresStore,
    console: Console,
    orchestration_id: str | None,
    *,
    interval: float = 1.0,
) -> int:
    """The live status table of a running orchestration until it ends; Ctrl-C (SIGINT)
    leaves it, the run goes on untouched."""
    orch, _ = await resolve(store, [orchestration_id] if orchestration_id else [])
    refuse_unless_live(orch, "; `coordinator status` shows it")
    watch = asyncio.ensure_future(
        from_db.status(store, console, orch.id, watch=True, json_output=False, interval=interval)
    )
    left: list[bool] = []

    def leave() -> None:
        left.append(True)
        watch.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, leave)
    try:
        console.print(f"attached to {orch.id} (Ctrl-C leaves; the run goes on)")
        try:
            await watch
        except asyncio.CancelledError:
            if not left:
                raise
            console.print(f"left {orch.id}; it goes on (coordinator attach {orch.id} to return)")
            return 0
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    ended = await store.get_orchestration(orch.id)
    status = ended.status if ended is not None else "gone"
    if status == "lost":
        assert ended is not None
        console.print(f"{orch.id}: {from_db.shown_status(ended, datetime.now(UTC))}")
        return 1
    console.print(f"{orch.id} ended: {status}")
    return 0
