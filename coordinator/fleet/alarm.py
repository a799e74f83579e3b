"""Budget crossings pushed to every runner: the runner that first sees a shared budget
exceeded (in the sums it polled, or in its own instance's live count) NOTIFYs channel
``coordinator_budget``; every runner LISTENs on one connection of its own and blocks the
instances it holds at once, instead of at its own next poll (``budget_poll_s``) behind a
query that a loaded database answers slowly. The poll stays: a lost notification or a
dropped listener only costs the poll's latency. The listener reconnects on the next
:meth:`BudgetAlarm.ensure` after it broke."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.db.listen import Listener
from coordinator.fleet.budgets import parse_alarm

CHANNEL = "coordinator_budget"


class BudgetAlarm:
    """One LISTEN connection; ``heard(orchestration_id, budget_key, used)`` per
    notification (``used``: what the run had spent against it when it was seen)."""

    def __init__(self, dsn: str, heard: Callable[[str, str, float], None]) -> None:
        self.heard = heard
        self._listener = Listener(dsn, CHANNEL, self._notified, what="budget crossings")

    @property
    def listening(self) -> bool:
        return self._listener.listening

    def ensure(self) -> None:
        """(Re)connect in the background if not listening (one attempt at a time)."""
        self._listener.ensure()

    def _notified(self, payload: str) -> None:
        parsed = parse_alarm(payload)
        if parsed is not None:
            self.heard(*parsed)

    async def close(self) -> None:
        await self._listener.close()
