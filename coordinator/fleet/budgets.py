"""Budgets across runners, pure: a runner's engine counts its own instance; what the run's
other instances (on any runner) spent comes from the database and is added to each shared
budget (overall, per command) of that engine's book, with the same threshold and crossing
rules as one host. Per-instance budgets need nothing: their instance is here.

What the database returns is :class:`RunUse`, sums only (``budget_use`` in queries.sql):
the whole run's, each budgeted command's, and the hosted instances' own rows (subtracted:
an engine counts its own instance live). Not every row of the run: a runner reads this
every poll, and a run may have thousands of instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from coordinator.budget.rules import Budget, BudgetBook, BudgetEvent, BudgetScope, BudgetUnit
from coordinator.db.rows import InstanceRow
from coordinator.plan import RunPlan


@dataclass(frozen=True, slots=True)
class Spent:
    """Sums over some instance rows."""

    tokens: int = 0  # input + output + cache reads + cache creation
    cache_read: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.tokens + other.tokens,
            self.cache_read + other.cache_read,
            self.cost_usd + other.cost_usd,
        )

    def __sub__(self, other: Spent) -> Spent:
        return Spent(
            self.tokens - other.tokens,
            self.cache_read - other.cache_read,
            self.cost_usd - other.cost_usd,
        )

    @classmethod
    def of(cls, row: InstanceRow) -> Spent:
        tokens = (
            row.input_tokens + row.output_tokens + row.cache_read_tokens + row.cache_creation_tokens
        )
        return cls(tokens, row.cache_read_tokens, row.cost_usd)


@dataclass(frozen=True, slots=True)
class RunUse:
    """What a run's rows add up to: overall, per budgeted command, per hosted instance."""

    overall: Spent = Spent()
    commands: Mapping[str, Spent] = field(default_factory=dict)
    own: Mapping[str, Spent] = field(default_factory=dict)  # the hosted instances' rows

    @classmethod
    def of_rows(
        cls, plan: RunPlan, rows: Mapping[str, InstanceRow], hosted: Iterable[str]
    ) -> RunUse:
        """The same sums from full rows (what the query computes in the database)."""
        command_of = dict(zip(*command_groups(plan), strict=True))
        overall = Spent()
        commands: dict[str, Spent] = {}
        for name, row in rows.items():
            spent = Spent.of(row)
            overall += spent
            command = command_of.get(name)
            if command is not None:
                commands[command] = commands.get(command, Spent()) + spent
        own = {name: Spent.of(rows[name]) for name in hosted if name in rows}
        return cls(overall, commands, own)


def command_groups(plan: RunPlan) -> tuple[list[str], list[str]]:
    """The instances of the whole run a command budget covers, and their command (the
    query's groups); empty without command budgets."""
    targets = set(plan.budget.command_budgets) | set(plan.budget.command_cost_budgets)
    pairs = [(i.name, i.slash_command) for i in plan.instances if i.slash_command in targets]
    return [n for n, _ in pairs], [c for _, c in pairs if c is not None]


def others_use(budget: Budget, book: BudgetBook, use: RunUse, hosted: str) -> float | None:
    """What the instances ``budget`` covers, other than ``hosted``, spent (None: it covers
    no other instance: nothing to add)."""
    if budget.scope is BudgetScope.OVERALL:
        total = use.overall
    elif budget.scope is BudgetScope.COMMAND:
        total = use.commands.get(budget.target, Spent())
    else:
        return None
    spent = total - use.own.get(hosted, Spent())
    if budget.unit is BudgetUnit.TOKENS:
        return float(spent.tokens if book.count_cache_reads else spent.tokens - spent.cache_read)
    return spent.cost_usd


@dataclass
class SharedTally:
    """What has been added to each shared budget of one engine's book so far."""

    added: dict[str, float] = field(default_factory=dict)  # budget key -> others' use

    def apply(
        self, book: BudgetBook, plan: RunPlan, hosted: str, rows: Mapping[str, InstanceRow]
    ) -> list[BudgetEvent]:
        """:meth:`apply_use` from full rows."""
        return self.apply_use(book, RunUse.of_rows(plan, rows, [hosted]), hosted)

    def apply_use(self, book: BudgetBook, use: RunUse, hosted: str) -> list[BudgetEvent]:
        """Bring the others' use up to date; the thresholds and limits newly crossed."""
        events: list[BudgetEvent] = []
        for budget in book.covering(hosted):
            if budget.scope is BudgetScope.INSTANCE:
                continue
            used = others_use(budget, book, use, hosted)
            if used is None:
                continue
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

    def apply_alarm(
        self, book: BudgetBook, budget_key: str, hosted: str, used: float
    ) -> list[BudgetEvent]:
        """Another runner saw ``budget_key`` exceeded with ``used`` spent by the whole run:
        the crossing for ``hosted``'s engine, as one of its polls would show it (nothing if
        this book knows already, or has no such budget over ``hosted``). The others' use
        is brought up to ``used`` (the next poll goes on from there, nothing counted twice)."""
        for budget in book.covering(hosted):
            if budget.key != budget_key or budget.scope is BudgetScope.INSTANCE:
                continue
            if budget.exceeded:
                return []
            bump = max(0.0, used - budget.used)
            budget.used += bump
            self.added[budget.key] = self.added.get(budget.key, 0.0) + bump
            budget.warned.update(t for t in book.thresholds if budget.pct >= t)
            budget.exceeded = True
            return [BudgetEvent(budget, 100, "another runner", exceeded=True)]
        return []


# ------------------------------------------------------------------ crossings, pushed
# A runner that sees a shared budget exceeded (the sums it polled, or its own instance's
# live count) tells every runner at once (NOTIFY, coordinator/fleet/alarm.py), so a block
# takes the first runner's poll plus a notification, not every runner's own poll.
ALARM_SEP = "\t"


def alarm_payload(orchestration_id: str, budget_key: str, used: float) -> str:
    return f"{orchestration_id}{ALARM_SEP}{budget_key}{ALARM_SEP}{used!r}"


def parse_alarm(payload: str) -> tuple[str, str, float] | None:
    """(run, budget key, what the run had used when it was seen); None: not one of ours."""
    parts = payload.split(ALARM_SEP)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        return parts[0], parts[1], float(parts[2])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Watch:
    """A shared budget the row writes themselves check (queries.sql
    fenced_update_instances): a write that takes its run's rows past ``limit`` notifies
    every runner in the statement that crossed, at its commit."""

    run: str
    key: str
    limit: float
    in_tokens: bool
    cache_reads: bool  # tokens: cache reads count
    members: frozenset[str] | None  # None: every instance of the run


def watches(
    run: str,
    book: BudgetBook,
    groups: tuple[list[str], list[str]],
    known: Iterable[str] = (),
) -> list[Watch]:
    """The shared budgets of ``book`` for the writes to watch: not exceeded yet, and not
    ``known`` exceeded (announced or heard already). ``groups``: :func:`command_groups`
    of the run (a command budget covers those instances of the whole run)."""
    skip = set(known)
    found = []
    for b in book.budgets:
        if b.scope is BudgetScope.INSTANCE or b.exceeded or b.key in skip:
            continue
        members = None
        if b.scope is BudgetScope.COMMAND:
            members = frozenset(n for n, c in zip(*groups, strict=True) if c == b.target)
        in_tokens = b.unit is BudgetUnit.TOKENS
        found.append(Watch(run, b.key, b.limit, in_tokens, book.count_cache_reads, members))
    return found


def exceeded_keys(book: BudgetBook) -> dict[str, float]:
    """The shared budgets of ``book`` (overall, per command) exceeded so far: their use."""
    return {
        b.key: b.used for b in book.budgets if b.exceeded and b.scope is not BudgetScope.INSTANCE
    }
