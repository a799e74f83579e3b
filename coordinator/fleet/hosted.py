"""``coordinator run --fleet``: the one-host form of a fleet run. The run is recorded and
queued as ``submit`` does, but on queues of its own; a runner in this process claims its
instances (up to ``--capacity``, default all of them) and runners on other hosts join it
(any ``coordinator runner`` whose labels the instances' labels are a subset of). The
process shows the run's status until every instance ended, wherever it ran, then writes
the results.

Ctrl-C (SIGINT, SIGTERM, SIGHUP) stops the whole run, as it does a one-host run: a
``stop`` control command for every instance, which reaches every runner holding one; the
results are still written. A second one only says the stop is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid

import asyncpg
import structlog
from rich.console import Console, RenderableType
from rich.live import Live

from coordinator import app
from coordinator.control.channel import PostgresChannel
from coordinator.control.commands import Verb
from coordinator.db.postgres import PostgresStore
from coordinator.errors import DatabaseError
from coordinator.fleet.queue import PgQueue
from coordinator.fleet.runner import Runner
from coordinator.fleet.store import RunnerIdentity
from coordinator.fleet.submit import record_and_queue, wait_and_write
from coordinator.settings import Settings
from coordinator.status import from_db
from runner import aio

log = structlog.get_logger("coordinator.fleet.hosted")

SHOW_EVERY_S = 1.0


async def run_hosted(
    req: app.RunRequest, settings: Settings, console: Console, capacity: int | None
) -> int:
    queued = await record_and_queue(req, settings, console, kind="hosted")
    db, run = queued.db, queued.run
    plan = run.plan
    orch_id = plan.orchestration_id
    try:
        queue = await PgQueue.open(db.dsn)
    except BaseException:
        await db.store.close()
        raise
    host = socket.gethostname()
    me = RunnerIdentity(
        id=uuid.uuid4(),
        name=f"{host}-{os.getpid()}",
        host=host,
        pid=os.getpid(),
        capacity=capacity or len(plan.instances),
        labels=(),
        lease_s=settings.lease_s,
    )
    runner = Runner(
        me,
        store=db.store,
        queue=queue,
        dsn=db.dsn,
        masked=db.masked,
        settings=settings,
        console=console,
        database_url=req.database_url,
        only_entrypoints=list(queued.entrypoints),
        handle_signals=False,
    )
    console.print(
        f"{orch_id}: {len(plan.instances)} instance(s) queued; this process runs up to "
        f"{me.capacity} of them; runners on other hosts join with `coordinator runner "
        f"--database-url ...` ({db.masked})",
        highlight=False,
        soft_wrap=True,
    )
    loop = asyncio.get_running_loop()
    stopping: list[signal.Signals] = []
    sent: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping:
            console.print(f"{sig.name}: the stop is under way (results follow)", highlight=False)
            return
        stopping.append(sig)
        console.print(f"{sig.name}: stopping every instance, on every runner", highlight=False)
        sent.append(loop.create_task(_stop_all(db.store.pool, orch_id, sig), name="stop-run"))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    serving = asyncio.create_task(runner.run(), name="hosted-runner")
    ended = asyncio.Event()
    shown = asyncio.create_task(_show(db.store, console, orch_id, ended, req.quiet))
    try:
        code = await wait_and_write(
            db.store, run, queued.output, console, settings, handle_signals=False
        )
    finally:
        ended.set()
        await shown
        if sent:
            await asyncio.gather(*sent, return_exceptions=True)
        runner.drain()
        with contextlib.suppress(Exception):
            await serving
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await queue.close()
        await db.store.close()
    return 130 if stopping and code != 0 else code


async def _stop_all(pool: asyncpg.Pool, orchestration_id: str, sig: signal.Signals) -> None:
    """The stop as a control command: whichever runner takes it reaches every holder."""
    channel = PostgresChannel.on_pool(pool)
    try:
        await channel.send(
            orchestration_id, Verb.STOP, [], f"{socket.gethostname()}:{os.getpid()} ({sig.name})"
        )
    except DatabaseError as exc:
        log.warning("stop not sent", error=str(exc))
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _show(
    store: PostgresStore, console: Console, orch_id: str, ended: asyncio.Event, quiet: bool
) -> None:
    """The status table, live on a terminal (a pipe gets the runner's lines and the end)."""
    if quiet or not console.is_terminal:
        return

    async def table() -> RenderableType:
        shown: RenderableType = from_db.render_snapshot(await from_db.snapshot(store, orch_id))
        return shown

    with Live(await table(), console=console, refresh_per_second=2) as live:
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(ended.wait(), SHOW_EVERY_S)
            with contextlib.suppress(DatabaseError):
                live.update(await table())
