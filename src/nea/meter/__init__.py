"""nea's memory meter: per-context memory budgets.

Owns the meter's public surface: ``backend()`` here; ``budget``, ``Budget``,
``BudgetStatistics``, ``BudgetExceeded`` and ``current_budget`` are re-exported by ``nea``.
The serving path is the C extension ``nea._meter`` (allocator hooks); the fallback is a
tracemalloc meter with weaker guarantees. See docs/budgets.md.

Must not import the server, the middleware or the pytest plugin.
"""

from __future__ import annotations

from nea.meter._budget import Budget, budget, current_budget
from nea.meter._select import backend
from nea.meter._stats import BudgetExceeded, BudgetStatistics

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetStatistics",
    "backend",
    "budget",
    "current_budget",
]
