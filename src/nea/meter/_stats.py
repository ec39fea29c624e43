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

    ``limit``, ``live``, ``peak``, ``retained`` and ``ceiling`` are bytes. ``allocations``
    counts the allocations charged to the budget, ``refused`` the allocations it refused
    (only past its hard ``ceiling``). ``retained`` is what was still live when the budget
    closed (0 while it is open). ``refused_at`` is the site of the allocation that took
    the budget past its limit (the trip), as ``"file.py:42 in func"``, or ``None``.
    ``ceiling`` is 0 for meters that refuse nothing (tracemalloc).
    """

    limit: int
    live: int
    peak: int
    allocations: int
    refused: int
    retained: int
    refused_at: str | None
    ceiling: int = 0


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
    ceiling: int = 0

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(
            limit=self.limit,
            live=self.live,
            peak=self.peak,
            allocations=self.allocations,
            refused=self.refused,
            retained=self.retained,
            refused_at=self.refused_at,
            ceiling=self.ceiling,
        )


class BudgetExceeded(MemoryError):
    """A block ran out of its memory budget.

    Raised in the block's own code at the first safe point after an allocation took it
    past its limit (native meter; see docs/budgets.md), and when leaving a tripped
    budget's ``with``/``async with`` block that did not raise it already (in place of a
    ``MemoryError``, which becomes ``__cause__``, or on its own when the block swallowed
    the first one). ``statistics`` holds the budget's accounting, ``requested`` the size
    of the allocation that tripped it (``0`` for the tracemalloc meter, which measures on
    exit).
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


def thread_delivery(statistics: BudgetStatistics, requested: int) -> type[BudgetExceeded]:
    """The exception *class* delivered to a worker thread (CPython raises an asynchronous
    exception by calling its class with no arguments): a ``BudgetExceeded`` whose
    no-argument construction carries this trip's numbers."""

    def __init__(self: BudgetExceeded, *args: object) -> None:
        if args:
            BudgetExceeded.__init__(self, *args)  # type: ignore[arg-type]
        else:
            BudgetExceeded.__init__(self, statistics, requested)

    return type("BudgetExceeded", (BudgetExceeded,), {"__init__": __init__, "__slots__": ()})


def _message(stats: BudgetStatistics, requested: int) -> str:
    usage = f"live {format_size(stats.live)}, peak {format_size(stats.peak)}"
    advice = "raise the budget or make this code use less memory"
    if requested:
        where = stats.refused_at or "an unknown line (no Python frame)"
        refused = ""
        if stats.refused:
            refused = (
                f"; {stats.refused} allocation{'s' if stats.refused != 1 else ''} past its "
                f"hard ceiling of {format_size(stats.ceiling)} refused"
            )
        return (
            f"memory budget of {format_size(stats.limit)} exceeded: an allocation of "
            f"{format_size(requested)} at {where} crossed it{refused}; {usage}; {advice}"
        )
    return (
        f"memory budget of {format_size(stats.limit)} exceeded: {usage} "
        f"(measured on exit, no allocation was refused); {advice}"
    )
