"""The coordinator side of the control channel: while a run goes on, take the commands sent
to its orchestration (woken by NOTIFY, or every ``poll_s`` anyway), apply each one to the
orchestrator and acknowledge it with the outcome per instance.

The database going away never touches the run: one log line, then the listener retries
(reconnects, LISTENs again, re-reads the table) until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Protocol, TypeVar

import structlog

from coordinator.control.channel import ControlChannel, PostgresChannel
from coordinator.control.commands import ControlCommand, Verb, whole_run
from coordinator.engine.state import InstanceState
from coordinator.errors import CoordinatorError
from runner import aio

log = structlog.get_logger("coordinator.control")
T = TypeVar("T")

# What a channel call may raise that must not end the run.
TROUBLE = (CoordinatorError, OSError, TimeoutError)


class Controllable(Protocol):
    """What the listener needs of the orchestrator."""

    @property
    def states(self) -> Mapping[str, InstanceState]: ...

    def stop_instances(self, names: Sequence[str], reason: str) -> dict[str, str]: ...
    def pause_instances(self, names: Sequence[str]) -> dict[str, str]: ...
    def unpause_instances(self, names: Sequence[str]) -> dict[str, str]: ...


class ControlListener:
    def __init__(
        self,
        channel: ControlChannel,
        orchestration_id: str,
        target: Controllable,
        *,
        poll_s: float = 1.0,
        call_timeout_s: float = 10.0,
        stop_wait_s: float = 10.0,
    ) -> None:
        self.channel = channel
        self.orchestration_id = orchestration_id
        self.target = target
        self.poll_s = poll_s
        self.call_timeout_s = call_timeout_s
        self.stop_wait_s = stop_wait_s  # how long a stop's ack waits for the instances' end
        self.applied: list[ControlCommand] = []  # for tests and the log
        self._unacked: dict[int, tuple[dict[str, str], str | None]] = {}
        self._stopping: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._trouble = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="control-listener")

    async def close(self, deadline_s: float = 5.0) -> None:
        """Stop listening; acknowledgements of stops still under way get ``deadline_s``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._stopping:
            await asyncio.wait(list(self._stopping.values()), timeout=deadline_s)
        for task in self._stopping.values():
            task.cancel()
        with contextlib.suppress(*TROUBLE):
            await aio.wait_for(self.channel.close(), deadline_s)

    # ------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        delay = self.poll_s
        while True:
            try:
                await self.serve_once()
                await self.channel.wait(self.orchestration_id, self.poll_s)
            except TROUBLE as exc:
                self._unhealthy(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # a bug here must not end the run either
                log.exception("control listener error; going on")
                await asyncio.sleep(self.poll_s)
                continue
            delay = self.poll_s
            if self._trouble:
                self._trouble = False
                log.info("control channel back")

    async def serve_once(self) -> None:
        """Take, apply and acknowledge every open command (re-read from the table)."""
        open_commands = await self._call(self.channel.open_commands(self.orchestration_id))
        for command in open_commands:
            if command.id in self._stopping:
                continue  # applied; its ack waits for the instances to end
            if command.id in self._unacked:  # applied, the ack did not get through
                outcome, error = self._unacked[command.id]
                await self._ack(command.id, outcome, error)
                continue
            if not await self._call(self.channel.take(command.id)):
                continue  # withdrawn by its sender meanwhile (or taken by an earlier try)
            self._apply(command)

    def _apply(self, command: ControlCommand) -> None:
        names = list(command.instances)
        outcome: dict[str, str] = {}
        error: str | None = None
        try:
            if command.verb is Verb.STOP:
                every = whole_run(names, list(self.target.states))
                reason = f"stopped by `coordinator stop` from {command.requested_by}"
                outcome = self.target.stop_instances(names, reason)
                log.info("control command", verb="stop", instances=names, whole_run=every)
                self.applied.append(command)
                self._stopping[command.id] = asyncio.create_task(
                    self._ack_when_stopped(command.id, outcome), name=f"control-ack:{command.id}"
                )
                return
            if command.verb is Verb.PAUSE:
                outcome = self.target.pause_instances(names)
            else:
                outcome = self.target.unpause_instances(names)
        except CoordinatorError as exc:
            error = str(exc)
        log.info("control command", verb=command.verb.value, instances=names, error=error)
        self.applied.append(command)
        self._unacked[command.id] = (outcome, error)
        self._spawn_ack(command.id, outcome, error)

    def _spawn_ack(self, command_id: int, outcome: dict[str, str], error: str | None) -> None:
        task = asyncio.create_task(self._ack_soon(command_id, outcome, error))
        self._stopping[command_id] = task
        task.add_done_callback(lambda t: self._stopping.pop(command_id, None))

    async def _ack_soon(self, command_id: int, outcome: dict[str, str], error: str | None) -> None:
        with contextlib.suppress(*TROUBLE):  # kept in _unacked: the loop retries
            await self._ack(command_id, outcome, error)

    async def _ack_when_stopped(self, command_id: int, outcome: dict[str, str]) -> None:
        """A stop is acknowledged once the instances it stopped have ended (bounded), with
        the status each ended with."""
        stopping = [n for n, text in outcome.items() if not text.startswith("already ")]
        deadline = time.monotonic() + self.stop_wait_s
        states = self.target.states
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (no event to wait on)
            states[n].status.finished for n in stopping
        ):
            await asyncio.sleep(0.05)
        final = {
            n: (states[n].status.value if n in stopping and states[n].status.finished else text)
            for n, text in outcome.items()
        }
        self._unacked[command_id] = (final, None)
        self._stopping.pop(command_id, None)
        with contextlib.suppress(*TROUBLE):
            await self._ack(command_id, final, None)

    async def _ack(self, command_id: int, outcome: dict[str, str], error: str | None) -> None:
        await self._call(self.channel.ack(command_id, outcome, error))
        self._unacked.pop(command_id, None)

    async def _call(self, call: Awaitable[T]) -> T:
        return await aio.wait_for(call, self.call_timeout_s)

    def _unhealthy(self, exc: BaseException) -> None:
        if not self._trouble:
            self._trouble = True
            log.warning(
                "control channel unavailable; retrying (commands wait in the database)",
                error=str(exc) or type(exc).__name__,
            )


@contextlib.asynccontextmanager
async def listen_for_commands(
    dsn: str | None, orchestration_id: str, target: Controllable, **kw: float
) -> AsyncIterator[ControlListener | None]:
    """Around a run: control commands are taken while it goes on (None: no database, no
    control channel)."""
    if dsn is None:
        yield None
        return
    listener = ControlListener(PostgresChannel.on_dsn(dsn), orchestration_id, target, **kw)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()
