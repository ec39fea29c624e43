"""``Budget``: the public context manager around one meter handle.

Owns: ``Budget``, ``budget()`` and ``current_budget()``. The budget is current while its
``with``/``async with`` block runs, through the meter's contextvar, so it follows the
block's tasks and ``to_thread`` calls. Entering and leaving are one meter call each
(``enter``/``exit``). Leaving closes the meter handle first (the exit path is then not
charged, so an exhausted budget can always be left), then restores the previous budget,
then raises ``BudgetExceeded`` if the budget tripped.

Must not import the server, the middleware or the C extension directly (``_select`` does).
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

from nea._sizes import parse_size
from nea.meter import _select
from nea.meter._exits import register_exit_frame
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
    enclosing budget. The allocation that takes it past its limit succeeds and trips it;
    ``BudgetExceeded`` is then raised in the block's own code at the next safe point
    (native meter), and leaving a tripped block raises it if the block did not. Only past
    the hard ``ceiling`` (default: the limit plus the larger of the limit and 1 MiB) are
    allocations refused with ``MemoryError``. A budget is entered once; reading it
    afterwards gives the final accounting.
    """

    __slots__ = ("__weakref__", "_ceiling", "_handle", "_limit", "_meter")

    def __init__(self, limit: int | str, ceiling: int | str | None = None) -> None:
        # nea.meter._door.request_budget builds per-request budgets with these same fields
        # without calling __init__ (a frame less per request): change both together.
        # A plain non-negative int is the per-request case: skip the parser's checks.
        self._limit = limit if type(limit) is int and limit >= 0 else parse_size(limit)
        self._ceiling = None if ceiling is None else _check_ceiling(self._limit, ceiling)
        self._meter: Meter = _select._active or active_meter()
        # The meter's handle from __enter__ on; it keeps the final numbers once closed.
        # Admission's per-message check reads ``_handle.tripped`` directly (a C getter).
        self._handle: Any = None

    def __repr__(self) -> str:
        snap = self._snapshot()
        handle = self._handle
        state = "new" if handle is None else "closed" if handle.closed else "open"
        return f"<Budget {state} limit={snap.limit} live={snap.live} peak={snap.peak}>"

    @property
    def limit(self) -> int:
        """The limit in bytes."""
        return self._limit

    @property
    def ceiling(self) -> int:
        """The hard ceiling in bytes (0 for the tracemalloc meter, which refuses nothing)."""
        return self._snapshot().ceiling

    @property
    def live(self) -> int:
        """Bytes charged now (after close: the bytes retained at close)."""
        handle = self._handle
        return 0 if handle is None else int(handle.live)

    @property
    def peak(self) -> int:
        """The most bytes ever charged at once."""
        handle = self._handle
        return 0 if handle is None else int(handle.peak)

    @property
    def tripped(self) -> bool:
        """True once an allocation took the budget past its limit (tracemalloc meter: once
        the limit is found passed).

        Allocates nothing with the native meter, so it can be read at a budget's edge."""
        handle = self._handle
        return handle is not None and handle.tripped is True

    @property
    def refused_size(self) -> int:
        """The size in bytes of the allocation that tripped the budget (0 while it has not
        tripped, and always with the tracemalloc meter, which measures on exit)."""
        return self._snapshot().refused_size

    def statistics(self) -> BudgetStatistics:
        """A frozen copy of the accounting (see ``BudgetStatistics``)."""
        return self._snapshot().statistics()

    def _snapshot(self) -> Snapshot:
        if self._handle is None:
            return Snapshot(self._limit, 0, 0, 0, 0, 0, False, 0, None, self._ceiling or 0)
        return self._meter.snapshot(self._handle)

    def __enter__(self) -> Budget:
        if self._handle is not None:
            raise _entered_twice()
        # Opens the budget nested in the current one and makes it current (set(), never
        # reset(): see docs/budgets.md); the handle remembers what to restore.
        self._handle = self._meter.enter(self._limit, self, self._ceiling)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing is the first thing exit does: from there on nothing is charged to this
        # budget, so leaving it cannot fail on its own limit.
        if self._meter.exit(self._handle):
            self._raise_tripped(exc)

    def _raise_tripped(self, exc: BaseException | None) -> None:
        """Leaving a tripped budget: raise ``BudgetExceeded`` unless ``exc`` (what the block
        raised) is one already or is an unrelated error, which propagates unchanged."""
        if isinstance(exc, BudgetExceeded):
            return
        if exc is None:
            raise self._exceeded()
        if isinstance(exc, MemoryError):
            raise self._exceeded() from exc

    def _exceeded(self) -> BudgetExceeded:
        """The error of this tripped budget, from one snapshot of its numbers (admission and
        nea's server raise it too, for messages an app sends after a trip)."""
        final = self._snapshot()
        return BudgetExceeded(final.statistics(), final.refused_size)

    async def __aenter__(self) -> Budget:
        # __enter__'s body rather than a call to it: one frame less per request for
        # per-request wrappers written with ``async with nea.budget(...)``.
        if self._handle is not None:
            raise _entered_twice()
        self._handle = self._meter.enter(self._limit, self, self._ceiling)
        return self

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> _Done:
        # A plain method, so no coroutine is allocated under the budget before it closes;
        # __exit__'s body rather than a call to it (one frame less per request).
        if self._meter.exit(self._handle):
            self._raise_tripped(exc)
        return _DONE


def _check_ceiling(limit: int, ceiling: int | str) -> int:
    value = parse_size(ceiling)
    if value < limit:
        raise ValueError(f"ceiling: expected at least the limit ({limit} bytes), got {ceiling!r}")
    return value


def _entered_twice() -> RuntimeError:
    return RuntimeError(
        "this budget was already entered; a budget covers one block, "
        "create a new one with nea.budget() for each block"
    )


def budget(limit: int | str, *, ceiling: int | str | None = None) -> Budget:
    """A new memory budget of ``limit`` (bytes, or a size such as ``"16MiB"``), with a
    hard ``ceiling`` where allocations start being refused (default: the limit plus the
    larger of the limit and 1 MiB).

    Raises ``ValueError`` for a malformed size (see ``nea.parse_size``) or a ceiling below
    the limit.
    """
    return Budget(limit, ceiling)


def current_budget() -> Budget | None:
    """The budget charged for allocations made here, or ``None``. In a task that outlived
    its budget, that is the nearest enclosing budget still open (``None`` when there is
    none: a closed budget is charged nothing)."""
    handle = active_meter().var.get()
    charged = handle.charged if handle is not None else None
    if charged is None:
        return None
    owner: Budget | None = charged.owner
    return owner


for _exit in (Budget.__exit__, Budget.__aexit__, Budget._raise_tripped, Budget._exceeded):
    register_exit_frame(_exit)
