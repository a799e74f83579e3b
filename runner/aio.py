"""``wait_for`` that never swallows a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result when a cancel arrives just as
the inner awaitable completes (CPython gh-86296, fixed in 3.12): the caller's cancel is
lost. A periodic task (a heartbeat: ``while True: await wait_for(...); await sleep(...)``)
then goes on forever, and whoever cancelled it and awaits its end hangs: a fleet runner
whose instance's sink closed this way never drained. ``asyncio.timeout`` (3.11) keeps the
cancel; this is ``wait_for`` on it, with the same TimeoutError. ``cancel_all`` ends tasks
for sure (bounded); ``within`` gives up on an awaitable without waiting for its cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw`` for at most ``timeout`` seconds (None: no limit), else TimeoutError;
    a cancel of the caller is never turned into a result."""
    async with asyncio.timeout(timeout):
        return await aw


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them to end, cancelling again any that goes on (a
    cancel swallowed by code we do not own), for at most ``timeout``; the ones still
    running then (left to end by themselves: a close must not hang on them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.5, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: its failure was the task's own business
    return pending


_ABANDONED: set[asyncio.Future[Any]] = set()  # given up on, left to end by themselves


async def within(aw: Awaitable[T], timeout_s: float) -> T:
    """``aw`` within ``timeout_s``, else TimeoutError, without waiting for its cancellation:
    across a cut link, cancelling a pooled query waits for the connection's release, which
    hangs as the query did (``asyncio.wait_for`` would wait with it)."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        return task.result()
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_ABANDONED.discard)
    raise TimeoutError
