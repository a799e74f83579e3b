"""Budget rules. Pure: the engine feeds usage, the book answers with events.

Three scopes share one mechanism: ``overall`` (every instance), ``command`` (every instance
whose command starts with that slash command; they share it) and ``instance``
(``max_tokens_per_command``). Each exists in tokens and, optionally, USD. Counted tokens are
input + output + cache read + cache creation; ``count_cache_reads: false`` drops cache reads.

A budget is *exceeded* when used > limit, and *spent* (nothing more may launch against it)
when used >= limit. Warnings fire once per budget and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from runner.events import Usage

if TYPE_CHECKING:
    from coordinator.plan import RunPlan


class BudgetScope(StrEnum):
    OVERALL = "overall"
    COMMAND = "command"
    INSTANCE = "instance"


class BudgetUnit(StrEnum):
    TOKENS = "tokens"
    USD = "usd"


@dataclass(slots=True)
class Budget:
    scope: BudgetScope
    unit: BudgetUnit
    limit: float
    members: frozenset[str]  # instance names this budget covers
    target: str = ""  # the command ("/x") or instance name; "" for overall
    used: float = 0.0
    warned: set[int] = field(default_factory=set)
    exceeded: bool = False
    blocked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        base = self.scope.value if not self.target else f"{self.scope.value}:{self.target}"
        return base if self.unit is BudgetUnit.TOKENS else f"{base}:usd"

    @property
    def label(self) -> str:
        what = {
            BudgetScope.OVERALL: "overall",
            BudgetScope.COMMAND: f"command {self.target}",
            BudgetScope.INSTANCE: f"instance {self.target}",
        }[self.scope]
        return f"{what} {'token' if self.unit is BudgetUnit.TOKENS else 'cost'} budget"

    @property
    def pct(self) -> float:
        return 100.0 * self.used / self.limit

    @property
    def spent(self) -> bool:
        return self.used >= self.limit

    @property
    def state(self) -> str:
        if self.exceeded:
            return "exceeded"
        return "warned" if self.warned else "ok"

    def describe_limit(self) -> str:
        if self.unit is BudgetUnit.TOKENS:
            return f"{self.label} {int(self.used):,}/{int(self.limit):,} tokens"
        return f"{self.label} ${self.used:.4f}/${self.limit:.4f}"

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "scope": self.scope.value,
            "unit": self.unit.value,
            "target": self.target or None,
            "limit": self.limit,
            "used": round(self.used, 6) if self.unit is BudgetUnit.USD else int(self.used),
            "pct": round(self.pct, 1),
            "state": self.state,
            "thresholds_crossed": sorted(self.warned),
            "blocked": list(self.blocked),
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A threshold crossed (``exceeded`` False) or a budget exceeded (True)."""

    budget: Budget
    threshold: int
    instance: str
    exceeded: bool

    def message(self) -> str:
        if self.exceeded:
            return f"{self.budget.describe_limit()} exceeded (by {self.instance})"
        return f"{self.budget.describe_limit()} reached {self.threshold}%"


@dataclass(slots=True)
class _Seen:
    tokens: float = 0.0
    usd: float = 0.0


class BudgetBook:
    def __init__(
        self,
        budgets: list[Budget],
        *,
        thresholds: tuple[int, ...] = (80, 100),
        count_cache_reads: bool = True,
    ) -> None:
        self.budgets = budgets
        self.thresholds = tuple(sorted(t for t in thresholds if t <= 100))
        self.count_cache_reads = count_cache_reads
        self._seen: dict[str, _Seen] = {}
        self._by_member: dict[str, list[Budget]] = {}
        for budget in budgets:
            for name in budget.members:
                self._by_member.setdefault(name, []).append(budget)

    def counted(self, usage: Usage) -> int:
        total = usage.total
        return total if self.count_cache_reads else total - usage.cache_read_tokens

    def update(self, name: str, usage: Usage, cost_usd: float) -> list[BudgetEvent]:
        """An instance's new totals; returns the thresholds and limits newly crossed."""
        budgets = self._by_member.get(name)
        if not budgets:
            return []
        seen = self._seen.setdefault(name, _Seen())
        tokens = float(self.counted(usage))
        d_tokens, d_usd = tokens - seen.tokens, cost_usd - seen.usd
        seen.tokens, seen.usd = tokens, cost_usd
        events: list[BudgetEvent] = []
        for budget in budgets:
            budget.used += d_tokens if budget.unit is BudgetUnit.TOKENS else d_usd
            for threshold in self.thresholds:
                if budget.pct >= threshold and threshold not in budget.warned:
                    budget.warned.add(threshold)
                    events.append(BudgetEvent(budget, threshold, name, exceeded=False))
            if not budget.exceeded and budget.used > budget.limit:
                budget.exceeded = True
                events.append(BudgetEvent(budget, 100, name, exceeded=True))
        return events

    def spent_for(self, name: str) -> Budget | None:
        """A budget covering ``name`` that is already spent (block mode: do not launch)."""
        for budget in self._by_member.get(name, ()):
            if budget.spent:
                return budget
        return None

    def covering(self, name: str) -> list[Budget]:
        return list(self._by_member.get(name, ()))


def budgets_from_plan(plan: RunPlan) -> BudgetBook:
    cfg = plan.budget
    names = frozenset(i.name for i in plan.instances)
    budgets: list[Budget] = []
    if cfg.overall_tokens:
        budgets.append(Budget(BudgetScope.OVERALL, BudgetUnit.TOKENS, cfg.overall_tokens, names))
    if cfg.overall_cost_usd:
        budgets.append(Budget(BudgetScope.OVERALL, BudgetUnit.USD, cfg.overall_cost_usd, names))
    for unit, table in (
        (BudgetUnit.TOKENS, cfg.command_budgets),
        (BudgetUnit.USD, cfg.command_cost_budgets),
    ):
        for command, limit in table.items():
            members = frozenset(i.name for i in plan.instances if i.slash_command == command)
            budgets.append(Budget(BudgetScope.COMMAND, unit, limit, members, command))
    for inst in plan.instances:
        if inst.token_budget:
            budgets.append(
                Budget(
                    BudgetScope.INSTANCE,
                    BudgetUnit.TOKENS,
                    inst.token_budget,
                    frozenset({inst.name}),
                    inst.name,
                )
            )
        if inst.cost_budget_usd:
            budgets.append(
                Budget(
                    BudgetScope.INSTANCE,
                    BudgetUnit.USD,
                    inst.cost_budget_usd,
                    frozenset({inst.name}),
                    inst.name,
                )
            )
    return BudgetBook(
        budgets,
        thresholds=tuple(cfg.warn_thresholds),
        count_cache_reads=cfg.count_cache_reads,
    )


def unused_command_budgets(plan: RunPlan) -> list[str]:
    """Command budgets that no instance's command uses (a warning before launch)."""
    used = {i.slash_command for i in plan.instances}
    keys = [*plan.budget.command_budgets, *plan.budget.command_cost_budgets]
    return sorted({k for k in keys if k not in used})
