"""runner.aio.wait_for keeps a cancel that arrives as the inner awaitable completes (3.11's
asyncio.wait_for returns the result then, and a periodic task never ends)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runner import aio


def _cancel_as_it_completes(wait_for: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> str:
    async def main() -> str:
        inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def beat() -> None:
            await wait_for(inner, 5.0)
            await asyncio.sleep(30)  # reached only if the cancel was swallowed

        task = asyncio.create_task(beat())
        await asyncio.sleep(0)  # the task now waits on inner
        inner.set_result(1)
        task.cancel()  # in the same turn of the loop: both are due
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
            return "cancel swallowed"
        return "cancelled" if task.cancelled() else "ended"

    return asyncio.run(main())


def test_a_cancel_as_the_inner_completes_is_kept() -> None:
    assert _cancel_as_it_completes(aio.wait_for) == "cancelled"


def test_the_timeout_is_a_timeout_error_and_a_result_is_returned() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await aio.wait_for(asyncio.sleep(5), 0.01)
        assert await aio.wait_for(asyncio.sleep(0, "x"), 1.0) == "x"
        assert await aio.wait_for(asyncio.sleep(0, "y"), None) == "y"

    asyncio.run(main())


def test_cancel_all_cancels_again_a_task_that_swallowed_the_cancel() -> None:
    """A task that swallows its first cancel (as 3.11's wait_for can) still ends; one that
    never lets go is returned after the timeout rather than hanging the caller."""

    async def main() -> None:
        release = asyncio.Event()

        async def swallows_once() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
            await asyncio.sleep(30)

        async def until_released() -> None:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(30)

        once = asyncio.create_task(swallows_once())
        stuck = asyncio.create_task(until_released())
        await asyncio.sleep(0)
        left = await aio.cancel_all([once], timeout=2.0)
        assert left == set() and once.cancelled()
        left = await aio.cancel_all([stuck], timeout=0.3)
        assert left == {stuck} and not stuck.done()
        release.set()
        assert await aio.cancel_all([stuck], timeout=2.0) == set()

    asyncio.run(main())
