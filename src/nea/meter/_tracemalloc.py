"""The portable fallback meter, built on :mod:`tracemalloc`.

Owns: ``TracemallocMeter``. Used when the C extension ``nea._meter`` is missing or
``NEA_METER=tracemalloc``. Its guarantees are weaker than the native meter's (see
docs/budgets.md): tracemalloc traces the whole process, so a budget sees every
allocation made while it is open (concurrent budgets see each other's), nothing is
refused at the allocating line, and the limit is checked on exit and whenever the
statistics are read. It is also 5-13x slower on allocation-heavy code.

Must not import ``nea.meter._budget`` or the C extension.
"""

from __future__ import annotations

import tracemalloc
from contextvars import ContextVar
from typing import TYPE_CHECKING

from nea.meter._stats import Snapshot

if TYPE_CHECKING:
    from nea.meter._budget import Budget


class TracemallocHandle:
    """One budget of the tracemalloc meter; its numbers are folded in when read."""

    __slots__ = (
        "_live",
        "_meter",
        "_peak",
        "base",
        "closed",
        "limit",
        "outer",
        "owner",
        "previous",
    )

    def __init__(self, meter: TracemallocMeter, owner: Budget, limit: int, base: int) -> None:
        self._meter = meter
        self.owner: Budget | None = owner
        self.limit = limit
        self.base = base
        self._live = 0
        self._peak = 0
        self.closed = False
        self.previous: TracemallocHandle | None = None
        # the enclosing open budget: a task that outlives this one is charged to it
        self.outer: TracemallocHandle | None = None

    @property
    def charged(self) -> TracemallocHandle | None:
        """This budget while open, else the nearest open one it was nested in."""
        handle: TracemallocHandle | None = self
        while handle is not None and handle.closed:
            handle = handle.outer
        return handle

    @property
    def live(self) -> int:
        if not self.closed:
            self._meter._fold()
        return self._live

    @property
    def peak(self) -> int:
        if not self.closed:
            self._meter._fold()
        return self._peak

    @property
    def tripped(self) -> bool:
        return self.peak > self.limit

    def snapshot(self) -> Snapshot:
        if not self.closed:
            self._meter._fold()
        return Snapshot(
            limit=self.limit,
            live=self._live,
            peak=self._peak,
            allocations=0,
            refused=0,
            retained=self._live if self.closed else 0,
            tripped=self._peak > self.limit,
            refused_size=0,
            refused_at=None,
        )


class TracemallocMeter:
    """Measures budgets as differences of tracemalloc's process-wide traced memory.

    tracemalloc has one peak for the process; every read folds it into all open budgets
    and resets it, so nested and concurrent budgets keep consistent peaks.
    """

    name = "tracemalloc"

    def __init__(self) -> None:
        self.var: ContextVar[TracemallocHandle | None] = ContextVar(
            "nea.budget.tracemalloc", default=None
        )
        self._open: list[TracemallocHandle] = []
        self._started_tracing = False

    def set_current(self, handle: TracemallocHandle | None) -> None:
        self.var.set(handle)

    def enter(
        self, limit: int, owner: Budget, ceiling: int | None = None, shares: bool = False
    ) -> TracemallocHandle:
        previous = self.var.get()
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            self._started_tracing = True
        self._fold()
        handle = TracemallocHandle(self, owner, limit, tracemalloc.get_traced_memory()[0])
        handle.previous = previous
        handle.outer = previous.charged if previous is not None else None
        self._open.append(handle)
        self.var.set(handle)
        return handle

    def exit(self, handle: TracemallocHandle) -> bool:
        if not handle.closed:
            self._fold()
            handle.closed = True
            self._open.remove(handle)
            if not self._open and self._started_tracing:
                tracemalloc.stop()
                self._started_tracing = False
        self.var.set(handle.previous)
        handle.previous = None
        handle.owner = None  # no Budget <-> handle cycle once closed (see the C meter)
        return handle.tripped

    def snapshot(self, handle: TracemallocHandle) -> Snapshot:
        return handle.snapshot()

    def _fold(self) -> None:
        if not tracemalloc.is_tracing():
            return  # someone stopped tracemalloc under us; keep the last readings
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for handle in self._open:
            handle._live = max(current - handle.base, 0)
            handle._peak = max(handle._peak, peak - handle.base, handle._live)
