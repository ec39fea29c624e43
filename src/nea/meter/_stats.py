"""The values a budget reports: ``BudgetStatistics`` and ``BudgetExceeded``.

Owns: the frozen statistics record, the exception raised when a tripped budget's block
is left, and the raw ``Snapshot`` that meters hand to ``Budget``. Must not import the
meters or ``nea.meter._budget`` (they import this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from nea._sizes import format_size


@dataclass(frozen=True, slots=True)
class BudgetStatistics:
    """A budget's accounting at one moment.

    ``limit``, ``live``, ``peak`` and ``retained`` are bytes. ``allocations`` counts the
    allocations charged to the budget, ``refused`` the allocations it refused.
    ``retained`` is what was still live when the budget closed (0 while it is open).
    ``refused_at`` is the first refused site as ``"file.py:42 in func"``, or ``None``.
    """

    limit: int
    live: int
    peak: int
    allocations: int
    refused: int
    retained: int
    refused_at: str | None


class Snapshot(NamedTuple):
    """What a meter reports about one budget (private; ``Budget`` turns it into the
    public ``BudgetStatistics``)."""

    limit: int
    live: int
    peak: int
    allocations: int
    refused: int
    retained: int
    tripped: bool
    refused_size: int
    refused_at: str | None

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(
            limit=self.limit,
            live=self.live,
            peak=self.peak,
            allocations=self.allocations,
            refused=self.refused,
            retained=self.retained,
            refused_at=self.refused_at,
        )


class BudgetExceeded(MemoryError):
    """A block ran out of its memory budget.

    Raised when leaving a tripped budget's ``with``/``async with`` block: in place of the
    ``MemoryError`` the trip caused (which becomes ``__cause__``), or on its own when the
    block swallowed that error. ``statistics`` holds the budget's final accounting,
    ``requested`` the size of the first refused allocation (``0`` when the meter does not
    refuse, as with the tracemalloc meter).
    """

    def __init__(self, statistics: BudgetStatistics, requested: int) -> None:
        self.statistics = statistics
        self.requested = requested
        super().__init__(_message(statistics, requested))

    def __reduce__(self) -> tuple[type[BudgetExceeded], tuple[BudgetStatistics, int]]:
        return (type(self), (self.statistics, self.requested))

    @property
    def limit(self) -> int:
        return self.statistics.limit

    @property
    def refused_at(self) -> str | None:
        return self.statistics.refused_at


def _message(stats: BudgetStatistics, requested: int) -> str:
    usage = f"live {format_size(stats.live)}, peak {format_size(stats.peak)}"
    advice = "raise the budget or make this code use less memory"
    if stats.refused:
        where = stats.refused_at or "an unknown line (no Python frame)"
        return (
            f"memory budget of {format_size(stats.limit)} exceeded: refused "
            f"{format_size(requested)} at {where}; {usage}; {advice}"
        )
    return (
        f"memory budget of {format_size(stats.limit)} exceeded: {usage} "
        f"(measured on exit, no allocation was refused); {advice}"
    )
