"""The lease is renewed on a thread of its own: a runner's event loop that is busy (a
hundred engines on 2 cores) does not lapse it, a renewal that hangs (a cut link) is given
up on and the runner told to fence itself, and if the runner's loop does not act on that
by the kill-by moment the backstop (the guardian) reaps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from coordinator.errors import DatabaseError
from coordinator.fleet.lease import Hold, Key, LeaseKeeper

LEASE_S = 2.0  # renewals every 0.5 s, lapse at 1.2 s, kill-by at 1.7 s


class FakeRenewal:
    """Plays ``script`` one attempt each ("hang": until abandoned, "fail": refused), then
    succeeds from there on."""

    def __init__(self, script: Sequence[str] = (), fenced: set[Key] | None = None) -> None:
        self.script = list(script)
        self.fenced = fenced or set()
        self.attempts = 0
        self.abandoned = 0
        self.seen: list[tuple[Sequence[Hold], str]] = []
        self.closed = False
        self.keeper: LeaseKeeper | None = None
        self.counted_at_start: list[int] = []  # the keeper's good renewals at each attempt

    async def renew(self, holds: Sequence[Hold], state: str) -> set[Key]:
        self.attempts += 1
        self.seen.append((holds, state))
        if self.keeper is not None:
            self.counted_at_start.append(self.keeper.renewals)
        how = self.script.pop(0) if self.script else "ok"
        if how == "hang":
            await asyncio.Event().wait()  # as a query across a cut link
        if how == "fail":
            raise DatabaseError("connection refused")
        return self.fenced

    def abandon(self) -> None:
        self.abandoned += 1

    async def close(self) -> None:
        self.closed = True


class Told:
    def __init__(self) -> None:
        self.fenced: list[set[Key]] = []
        self.lapses: list[float] = []
        self.frozen: list[float] = []
        self.backstops = 0
        self.backstopped = threading.Event()
        self.lapsed = asyncio.Event()
        self.got_fenced = asyncio.Event()

    def on_fenced(self, keys: set[Key]) -> None:
        self.fenced.append(keys)
        self.got_fenced.set()

    def on_lapse(self, since: float) -> None:
        self.lapses.append(since)
        self.lapsed.set()

    def on_frozen(self, frozen: float) -> None:
        self.frozen.append(frozen)

    def backstop(self) -> None:
        self.backstops += 1
        self.backstopped.set()


def _keeper(renewal: FakeRenewal, told: Told, holds: list[Hold]) -> LeaseKeeper:
    return LeaseKeeper(
        lambda: renewal,
        LEASE_S,
        holds=lambda: holds,
        state=lambda: "running",
        loop=asyncio.get_running_loop(),
        on_fenced=told.on_fenced,
        on_lapse=told.on_lapse,
        on_frozen=told.on_frozen,
        backstop=told.backstop,
    )


def test_a_busy_event_loop_does_not_lapse_the_lease() -> None:
    """The runner's loop is kept busy past the self-fence moment; the lease's thread renews
    all along (on the runner's loop this lapsed: the fault seen at 100 per runner)."""
    renewal = FakeRenewal()

    async def main() -> tuple[int, float, Told]:
        told = Told()
        keeper = _keeper(renewal, told, [Hold(("o", "a"), 3, 41)])
        keeper.start()
        blocked = time.monotonic()
        while time.monotonic() - blocked < LEASE_S * 0.9:  # the load under test: this
            sum(range(10_000))  # loop is busy in Python (holding the GIL), no turn of it
        held_for = time.monotonic() - blocked
        worst = keeper.since_renewed()
        await asyncio.sleep(0)  # whatever the thread told is delivered now
        count = keeper.renewals
        await keeper.stop()
        assert held_for >= LEASE_S * 0.6
        return count, worst, told

    count, worst, told = asyncio.run(main())
    assert count >= 3, f"only {count} renewals while the loop was busy"
    assert worst < LEASE_S * 0.6
    assert told.lapses == [] and told.backstops == 0
    assert renewal.seen[0] == ((Hold(("o", "a"), 3, 41),), "running")
    assert renewal.closed


def test_fenced_keys_are_told_to_the_runner() -> None:
    renewal = FakeRenewal(fenced={("o", "a")})

    async def main() -> Told:
        told = Told()
        keeper = _keeper(renewal, told, [Hold(("o", "a"), 3, 41)])
        keeper.start()
        await asyncio.wait_for(told.got_fenced.wait(), 10.0)
        await keeper.stop()
        return told

    told = asyncio.run(main())
    assert told.fenced[0] == {("o", "a")}


def test_a_hung_renewal_lapses_and_a_runner_that_does_not_act_is_backstopped() -> None:
    renewal = FakeRenewal(["hang"] * 100)

    async def main() -> tuple[float, float, Told]:
        told = Told()
        keeper = _keeper(renewal, told, [])
        keeper.start()
        await asyncio.wait_for(told.lapsed.wait(), 10.0)
        since = keeper.since_renewed()
        # the runner does not act (its loop is starved): the backstop fires by kill-by
        await asyncio.to_thread(told.backstopped.wait, 10.0)
        at_backstop = keeper.since_renewed()
        await keeper.stop()
        return since, at_backstop, told

    since, at_backstop, told = asyncio.run(main())
    assert LEASE_S * 0.6 <= since < LEASE_S * 0.85
    assert told.backstops == 1
    assert LEASE_S * 0.85 <= at_backstop < LEASE_S
    assert len(told.lapses) == 1  # told once per lapse
    assert renewal.abandoned >= 2  # every hung attempt given up on at its interval


def test_a_runner_that_acts_on_its_lapse_is_not_backstopped_and_a_renewal_ends_it() -> None:
    renewal = FakeRenewal(["hang"] * 4)  # the fifth attempt (at the lease's end) succeeds

    async def main() -> tuple[Told, float]:
        told = Told()
        keeper = _keeper(renewal, told, [])

        def act(since: float) -> None:
            told.on_lapse(since)
            keeper.lapse_acted()

        keeper._on_lapse = act
        keeper.start()
        assert await asyncio.to_thread(keeper.wait_renewals, 1, 10.0)
        after = keeper.since_renewed()
        await keeper.stop()
        return told, after

    told, after = asyncio.run(main())
    assert len(told.lapses) == 1
    assert told.backstops == 0
    assert after < LEASE_S * 0.6  # renewed again: the lapse is over


def test_a_failed_renewal_does_not_count_as_renewed() -> None:
    renewal = FakeRenewal(["hang", "fail"])

    async def main() -> None:
        told = Told()
        keeper = _keeper(renewal, told, [])
        renewal.keeper = keeper
        keeper.start()
        assert await asyncio.to_thread(keeper.wait_renewals, 2, 10.0)
        await keeper.stop()

    asyncio.run(main())
    assert renewal.counted_at_start[:4] == [0, 0, 0, 1]  # the hung and the refused did not
