"""The set-up behind ``coordinator runner``: the database (migrated), pgqueuer's schema,
the queue, this runner's identity; then the runner until it drains."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

from rich.console import Console

from coordinator.errors import DatabaseError, PreflightError
from coordinator.fleet.queue import PgQueue, install_queue
from coordinator.fleet.rules import entrypoints_for_runner, parse_labels
from coordinator.fleet.runner import Runner
from coordinator.fleet.store import RunnerIdentity
from coordinator.settings import Settings


async def serve(
    settings: Settings,
    console: Console,
    database_url: str | None,
    capacity: int,
    name: str | None,
    labels_text: str | None,
) -> int:
    from coordinator.db import open_store, resolve_dsn

    labels = parse_labels(labels_text)
    entrypoints_for_runner(labels)  # too many labels: one line, before connecting
    host = socket.gethostname()
    me = RunnerIdentity(
        id=uuid.uuid4(),
        name=name or f"{host}-{os.getpid()}",
        host=host,
        pid=os.getpid(),
        capacity=capacity,
        labels=labels,
        lease_s=settings.lease_s,
    )
    try:
        resolved = await asyncio.to_thread(resolve_dsn, settings.database_dsn(database_url))
        store = await open_store(resolved.dsn, max_size=4)
    except DatabaseError as exc:
        raise PreflightError(f"database: {exc} (a runner needs the runs' database)") from None
    try:
        try:
            await install_queue(resolved.dsn)
            queue = await PgQueue.open(resolved.dsn)
        except DatabaseError as exc:
            raise PreflightError(f"database ({resolved.masked}): {exc}") from None
        try:
            runner = Runner(
                me,
                store=store,
                queue=queue,
                dsn=resolved.dsn,
                masked=resolved.masked,
                settings=settings,
                console=console,
                database_url=database_url,
            )
            return await runner.run()
        finally:
            await queue.close()
    finally:
        await store.close()
