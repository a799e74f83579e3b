"""Control commands (``coordinator stop|pause|unpause``) of fleet runs, wherever their
instances run.

A command is a row of ``control_commands`` as for a one-host run; here any live runner may
take it (the take is atomic), which makes it the latest *want* of every instance it names
(``fleet_wants``, sql/012). The taker applies it to the instances nobody claimed yet, in
their rows; each holder applies it to the instances it runs (within a poll) and answers;
the taker acknowledges with every answer (bounded by :data:`ANSWER_WAIT_S`). A want
outlives its holder: the runner that claims or takes the instance over applies it again
before it launches (a paused instance stays paused across a take-over, a stopped one is
not started again).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from coordinator.control.commands import ControlCommand, Verb, command_from_row, decide
from coordinator.db.postgres import database_errors
from coordinator.fleet.queue import _sql
from coordinator.fleet.rules import Route, route

ANSWER_WAIT_S = 8.0  # how long the taker waits for the holders' answers before it acks
ANSWER_POLL_S = 0.1
POLL_S = 0.25  # runners read open commands and their instances' wants this often


@dataclass(frozen=True, slots=True)
class Want:
    orchestration_id: str
    name: str
    command_id: int
    verb: Verb
    reason: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.orchestration_id, self.name)


def reason_of(command: ControlCommand) -> str:
    return f"{command.verb.value} by `coordinator {command.verb.value}` from {command.requested_by}"


class FleetControlDb:
    """The statements of fleet control on the store's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def open_commands(self) -> list[ControlCommand]:
        with database_errors("read control commands"):
            rows = await self.pool.fetch(_sql("open_fleet_commands"))
        return [command_from_row(dict(r.items())) for r in rows]

    async def take(self, command_id: int) -> bool:
        from coordinator.control.channel import _sql as control_sql

        with database_errors("take a control command"):
            return await self.pool.fetchval(control_sql("take"), command_id) is not None

    async def ack(self, command_id: int, outcome: dict[str, str], error: str | None) -> None:
        from coordinator.control.channel import _sql as control_sql

        with database_errors("acknowledge a control command"):
            await self.pool.execute(control_sql("ack"), command_id, outcome, error)

    async def targets(self, orchestration_id: str, names: Sequence[str]) -> list[asyncpg.Record]:
        with database_errors("read the command's instances"):
            rows = await self.pool.fetch(_sql("command_targets"), orchestration_id, list(names))
        return list(rows)

    async def set_wants(self, command: ControlCommand, reason: str, names: Sequence[str]) -> None:
        with database_errors("record control wants"):
            await self.pool.execute(
                _sql("set_wants"),
                command.orchestration_id,
                command.id,
                command.verb.value,
                reason,
                list(names),
            )

    async def apply_unclaimed(
        self, orchestration_id: str, verb: Verb, names: Sequence[str], reason: str
    ) -> set[str]:
        """Applied to the rows of instances no runner claimed; the names it reached."""
        if not names:
            return set()
        with database_errors("apply a control command to unclaimed instances"):
            if verb is Verb.STOP:
                rows = await self.pool.fetch(
                    _sql("stop_unclaimed"), orchestration_id, list(names), reason
                )
            else:
                name = "pause_unclaimed" if verb is Verb.PAUSE else "unpause_unclaimed"
                rows = await self.pool.fetch(_sql(name), orchestration_id, list(names))
        return {r["name"] for r in rows}

    async def wants_of(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Want]:
        if not keys:
            return {}
        with database_errors("read control wants"):
            rows = await self.pool.fetch(
                _sql("wants_of"), [o for o, _ in keys], [n for _, n in keys]
            )
        wants = (
            Want(r["orchestration_id"], r["name"], r["command_id"], Verb(r["verb"]), r["reason"])
            for r in rows
        )
        return {w.key: w for w in wants}

    async def record_applied(self, want: Want, runner_id: uuid.UUID, outcome: str) -> None:
        with database_errors("record an applied control want"):
            await self.pool.execute(
                _sql("record_applied"),
                want.orchestration_id,
                want.name,
                want.command_id,
                runner_id,
                outcome,
            )

    async def answers(self, orchestration_id: str, command_id: int) -> dict[str, str]:
        with database_errors("read control answers"):
            rows = await self.pool.fetch(_sql("answers"), orchestration_id, command_id)
        return {r["name"]: r["outcome"] for r in rows}


async def serve_command(
    db: FleetControlDb, command: ControlCommand, taker: uuid.UUID
) -> tuple[dict[str, str], set[str]]:
    """Apply a taken command: wants for every instance it reaches, the unclaimed ones in
    their rows now, then the holders' answers (bounded). Acknowledges it; returns the
    outcome per instance and the instances it ended here, in their rows (the barrier
    must let them go, and the run may have ended)."""
    reason = reason_of(command)
    rows = await db.targets(command.orchestration_id, command.instances)
    found = {r["name"] for r in rows}
    unknown = [n for n in command.instances if n not in found]
    if unknown:
        await db.ack(command.id, {}, f"no instance named {unknown[0]!r}")
        return {}, set()
    outcome: dict[str, str] = {}
    statuses = {r["name"]: r["status"] for r in rows}
    routes = {r["name"]: route(r["status"], r["runner"] is not None) for r in rows}
    live = [n for n, r in routes.items() if r is not Route.ENDED]
    for name, where in routes.items():
        if where is Route.ENDED:
            outcome[name] = decide(command.verb, statuses[name]).text
    await db.set_wants(command, reason, live)  # from here every claim sees it
    unclaimed = [n for n in live if routes[n] is Route.UNCLAIMED]
    reached = await db.apply_unclaimed(command.orchestration_id, command.verb, unclaimed, reason)
    for name in unclaimed:
        if name in reached:
            text = decide(command.verb, statuses[name]).text
            outcome[name] = text
            await db.record_applied(
                Want(command.orchestration_id, name, command.id, command.verb, reason),
                taker,
                text,
            )
    waiting = [n for n in live if n not in outcome]  # held, or claimed meanwhile
    deadline = time.monotonic() + ANSWER_WAIT_S
    while waiting:
        answered = await db.answers(command.orchestration_id, command.id)
        for name in [n for n in waiting if n in answered]:
            outcome[name] = answered[name]
            waiting.remove(name)
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(ANSWER_POLL_S)
    for name in waiting:
        outcome[name] = (
            f"{decide(command.verb, statuses[name]).text} once its runner applies it "
            f"(no answer within {ANSWER_WAIT_S:g}s; it applies before any relaunch)"
        )
    ordered = {r["name"]: outcome[r["name"]] for r in rows}
    await db.ack(command.id, ordered, None)
    return ordered, reached if command.verb is Verb.STOP else set()
