"""``Budget``: the public context manager around one meter handle.

Owns: ``Budget``, ``budget()`` and ``current_budget()``. The budget is current while its
``with``/``async with`` block runs, through the meter's contextvar, so it follows the
block's tasks and ``to_thread`` calls. Leaving the block closes the meter handle first
(the exit path is then not charged, so an exhausted budget can always be left), then
restores the previous budget, then raises ``BudgetExceeded`` if the budget tripped.

Must not import the server, the middleware or the C extension directly (``_select`` does).
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

from nea._sizes import parse_size
from nea.meter._select import Meter, active_meter
from nea.meter._stats import BudgetExceeded, BudgetStatistics, Snapshot


class _Done:
    """The awaitable ``__aexit__`` returns: the work is done before it is awaited."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that finishes at once


_DONE = _Done()


class Budget:
    """A memory budget of ``limit`` bytes; use it as ``with`` or ``async with``.

    While the block runs, allocations made through CPython's allocator in its context
    (the task, tasks it creates, ``to_thread`` calls) are charged to it and to every
    enclosing budget. An allocation that would exceed a limit is refused with
    ``MemoryError`` (native meter) and the budget trips; leaving a tripped block raises
    ``BudgetExceeded``. A budget is entered once; reading it afterwards gives the final
    accounting.
    """

    __slots__ = ("__weakref__", "_final", "_handle", "_limit", "_meter", "_previous")

    def __init__(self, limit: int | str) -> None:
        self._limit = parse_size(limit)
        self._meter: Meter = active_meter()
        self._handle: Any = None
        self._previous: Any = None
        self._final: Snapshot | None = None

    def __repr__(self) -> str:
        snap = self._snapshot()
        state = "closed" if self._final else "open" if self._handle is not None else "new"
        return f"<Budget {state} limit={snap.limit} live={snap.live} peak={snap.peak}>"

    @property
    def limit(self) -> int:
        """The limit in bytes."""
        return self._limit

    @property
    def live(self) -> int:
        """Bytes charged now (after close: the bytes retained at close)."""
        return self._snapshot().live

    @property
    def peak(self) -> int:
        """The most bytes ever charged at once."""
        return self._snapshot().peak

    @property
    def tripped(self) -> bool:
        """True once an allocation was refused (or, tracemalloc meter, the limit passed)."""
        return self._snapshot().tripped

    def statistics(self) -> BudgetStatistics:
        """A frozen copy of the accounting (see ``BudgetStatistics``)."""
        return self._snapshot().statistics()

    def _snapshot(self) -> Snapshot:
        if self._final is not None:
            return self._final
        if self._handle is None:
            return Snapshot(self._limit, 0, 0, 0, 0, 0, False, 0, None)
        return self._meter.snapshot(self._handle)

    def __enter__(self) -> Budget:
        if self._handle is not None or self._final is not None:
            raise RuntimeError(
                "this budget was already entered; a budget covers one block, "
                "create a new one with nea.budget() for each block"
            )
        previous = self._meter.var.get()
        handle = self._meter.open(self._limit, self)
        # Always set(), never reset(): see __exit__.
        self._meter.set_current(handle)
        self._previous = previous
        self._handle = handle
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Close first: from here on nothing is charged to this budget, so leaving it
        # cannot fail on its own limit.
        final = self._meter.close(self._handle)
        self._final = final
        # set(previous) rather than reset(token): resetting to "no value" can leave
        # CPython's contextvar cache stale when the allocator hook reads the var.
        self._meter.set_current(self._previous)
        self._previous = None
        if not final.tripped or isinstance(exc, BudgetExceeded):
            return
        if exc is None:
            raise BudgetExceeded(final.statistics(), final.refused_size)
        if isinstance(exc, MemoryError):
            raise BudgetExceeded(final.statistics(), final.refused_size) from exc

    async def __aenter__(self) -> Budget:
        return self.__enter__()

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> _Done:
        # A plain method, so no coroutine is allocated under the budget before it closes.
        self.__exit__(exc_type, exc, tb)
        return _DONE


def budget(limit: int | str) -> Budget:
    """A new memory budget of ``limit`` (bytes, or a size such as ``"16MiB"``).

    Raises ``ValueError`` for a malformed size (see ``nea.parse_size``).
    """
    return Budget(limit)


def current_budget() -> Budget | None:
    """The budget charged for allocations made here, or ``None``."""
    handle = active_meter().var.get()
    if handle is None:
        return None
    owner: Budget | None = handle.owner
    return owner
