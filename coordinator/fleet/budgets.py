"""Budgets across runners, pure: a runner's engine counts its own instance; what the run's
other instances (on any runner) spent comes from their rows and is added to each shared
budget (overall, per command) of that engine's book, with the same threshold and crossing
rules as one host. Per-instance budgets need nothing: their instance is here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coordinator.budget.rules import Budget, BudgetBook, BudgetEvent, BudgetScope, BudgetUnit
from coordinator.db.rows import InstanceRow
from coordinator.plan import RunPlan
from runner.events import Usage


def others_of(budget: Budget, plan: RunPlan, hosted: str) -> frozenset[str]:
    """The instances of the whole run, other than ``hosted``, that ``budget`` covers."""
    if budget.scope is BudgetScope.OVERALL:
        return frozenset(i.name for i in plan.instances if i.name != hosted)
    if budget.scope is BudgetScope.COMMAND:
        return frozenset(
            i.name for i in plan.instances if i.slash_command == budget.target and i.name != hosted
        )
    return frozenset()


@dataclass
class SharedTally:
    """What has been added to each shared budget of one engine's book so far."""

    added: dict[str, float] = field(default_factory=dict)  # budget key -> others' use

    def apply(
        self, book: BudgetBook, plan: RunPlan, hosted: str, rows: Mapping[str, InstanceRow]
    ) -> list[BudgetEvent]:
        """Bring the others' use up to date; the thresholds and limits newly crossed."""
        events: list[BudgetEvent] = []
        for budget in book.covering(hosted):
            others = others_of(budget, plan, hosted)
            if not others:
                continue
            used = 0.0
            for name in others:
                row = rows.get(name)
                if row is None:
                    continue
                if budget.unit is BudgetUnit.TOKENS:
                    used += book.counted(
                        Usage(
                            row.input_tokens,
                            row.output_tokens,
                            row.cache_read_tokens,
                            row.cache_creation_tokens,
                        )
                    )
                else:
                    used += row.cost_usd
            key = budget.key
            budget.used += used - self.added.get(key, 0.0)
            self.added[key] = used
            for threshold in book.thresholds:
                if budget.pct >= threshold and threshold not in budget.warned:
                    budget.warned.add(threshold)
                    events.append(BudgetEvent(budget, threshold, "another runner", exceeded=False))
            if not budget.exceeded and budget.used > budget.limit:
                budget.exceeded = True
                events.append(BudgetEvent(budget, 100, "another runner", exceeded=True))
        return events
