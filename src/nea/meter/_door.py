"""The meter's door for nea's own serving code: admission, the server, the middleware,
the test client and the pytest plugin.

Owns: opening a per-request budget at the cost of one C call, asking whether it tripped,
the exception to raise for it, choosing the process's meter, and configuring the region.
Everything here is package-internal (not part of ``nea``'s public API); code outside
``nea.meter`` uses this module instead of ``Budget``'s or ``_select``'s private names.

Must not import the server, the middleware, admission or the pytest plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from nea.meter import _select
from nea.meter._budget import Budget
from nea.meter._exits import register_exit_frame
from nea.meter._loop import register_loop_frame
from nea.meter._region import configure as configure_region
from nea.meter._region import enabled as region_enabled
from nea.meter._region import info as region_info
from nea.meter._region import release as release_region
from nea.meter._region import set_enabled as enable_region
from nea.meter._region import supported as region_supported
from nea.meter._select import Meter, active_meter
from nea.meter._stats import BudgetExceeded

_new = Budget.__new__

Enter = Callable[..., Any]
Exit = Callable[[Any], bool]


def request_budget(limit: int) -> tuple[Budget, Enter, Exit]:
    """A new, not yet entered budget of ``limit`` bytes (already validated) for one
    request, with the meter's ``enter`` and ``exit``: ``enter(limit, budget, None, True)``
    opens it as a request budget (it may borrow from the shared ceiling, see
    ``share_ceiling``) and makes it current, returning its handle; ``exit(handle)``
    closes it and returns whether it tripped. Call ``bind(budget, handle)`` between.

    Built without ``Budget.__init__``'s frame (the same fields), and the meter's own
    functions are handed out, so a request costs two C calls and no Python frames."""
    budget = _new(Budget)
    budget._limit = limit
    budget._ceiling = None
    budget._meter = meter = _select._active or active_meter()
    budget._handle = None
    return budget, meter.enter, meter.exit


def bind(budget: Budget, handle: Any) -> None:
    """Record the handle ``enter`` returned for a budget from ``request_budget``."""
    budget._handle = handle


def tripped(handle: Any) -> bool:
    """Has the budget of this meter handle tripped? Allocates nothing (native meter), so
    it can be asked at a budget's very edge."""
    return handle.tripped is True


def exceeded(budget: Budget) -> BudgetExceeded:
    """The ``BudgetExceeded`` of a tripped budget, from one snapshot of its numbers."""
    return budget._exceeded()


def leaves_budgets(function: Callable[..., Any]) -> None:
    """Declare ``function`` as code that closes budgets (admission's request path): a
    trip's delivery due while it is the innermost frame waits."""
    register_exit_frame(function)


def use_meter(name: str) -> Meter:
    """Make ``name`` the meter new budgets use; returns the previous one."""
    return _select.use_meter(name)


def restore_meter(meter: Meter) -> None:
    """Undo ``use_meter``."""
    _select.restore_meter(meter)


_shared_ceiling = [0]


def share_ceiling(nbytes: int) -> None:
    """Let request budgets past their own ceiling go on while everything charged to
    request budgets stays within ``nbytes`` (a memory plan: slots × budget), or within a
    larger plan declared earlier in the process. Native meter only (the tracemalloc meter
    refuses nothing)."""
    if nbytes > _shared_ceiling[0] and _select.native_available():
        from nea import _meter

        _shared_ceiling[0] = nbytes
        _meter.set_shared_ceiling(nbytes)


_waking: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None


def wake_loop_for_deliveries(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Have worker threads that owe a trip's delivery wake ``loop`` (running in the main
    thread, the only one CPython runs the delivery call in): a pipe whose read end the loop
    watches. One loop at a time: asking for another loop moves the pipe there; asking again
    for the same loop changes nothing. Returns the function that undoes it (a no-op when
    this call changed nothing, or once the pipe moved on). Native meter only; elsewhere a
    no-op."""
    global _waking
    if not _select.native_available():
        return lambda: None
    if _waking is not None:
        if _waking[0] is loop:
            return lambda: None
        _waking[1]()
    from nea import _meter

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)

    def drain() -> None:
        with contextlib.suppress(OSError):
            os.read(read_fd, 4096)

    loop.add_reader(read_fd, drain)
    _meter.set_wake_fd(write_fd)

    def undo() -> None:
        global _waking
        if _waking is None or _waking[1] is not undo:
            return
        _waking = None
        _meter.set_wake_fd(-1)
        if not loop.is_closed():
            loop.remove_reader(read_fd)
        os.close(read_fd)
        os.close(write_fd)

    _waking = (loop, undo)
    return undo


def wake_running_loop() -> None:
    """``wake_loop_for_deliveries`` for the asyncio loop running here, when it runs in the
    main thread (for the middleware under other servers); costs one comparison once done."""
    waking = _waking
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio, or no loop
        return
    if waking is not None and waking[0] is loop:
        return
    if threading.current_thread() is threading.main_thread():
        wake_loop_for_deliveries(loop)


def native_available() -> bool:
    """True when the C meter imports on this interpreter."""
    return _select.native_available()


__all__ = [
    "Meter",
    "bind",
    "configure_region",
    "enable_region",
    "exceeded",
    "leaves_budgets",
    "native_available",
    "region_enabled",
    "region_info",
    "region_supported",
    "register_loop_frame",
    "release_region",
    "request_budget",
    "restore_meter",
    "share_ceiling",
    "tripped",
    "use_meter",
    "wake_loop_for_deliveries",
    "wake_running_loop",
]
