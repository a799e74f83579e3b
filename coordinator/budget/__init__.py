"""Token and cost budgets: pure rules (``rules``) applied by the run engine."""

from coordinator.budget.rules import (
    Budget,
    BudgetBook,
    BudgetEvent,
    BudgetScope,
    BudgetUnit,
    budgets_from_plan,
)

__all__ = ["Budget", "BudgetBook", "BudgetEvent", "BudgetScope", "BudgetUnit", "budgets_from_plan"]
