"""Choosing the meter: the C extension ``nea._meter`` when it imports, else tracemalloc.

Owns: the ``Meter`` protocol every meter implements, the native meter's thin adapter,
``active_meter()`` and ``backend()``. ``NEA_METER`` selects: unset or ``auto`` (native
when available), ``native`` (native or a ``ConfigError``), ``tracemalloc``.
Must not import ``nea.meter._budget``.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from types import CodeType
from typing import TYPE_CHECKING, Any, Protocol

from nea._errors import ConfigError
from nea.meter._stats import BudgetExceeded, Snapshot, thread_delivery
from nea.meter._tracemalloc import TracemallocMeter

if TYPE_CHECKING:
    from nea.meter._budget import Budget

METER_NAMES = ("native", "tracemalloc")


class Meter(Protocol):
    """What ``Budget`` needs from a meter.

    Handles are opaque but carry ``owner``, ``closed``, ``charged`` (the open handle charged
    where this one is current), ``limit``, ``live``, ``peak`` and ``tripped`` (read
    cheaply: ``send`` reads ``tripped`` on every message); once closed they keep the final
    numbers.
    """

    name: str
    var: ContextVar[Any]

    def set_current(self, handle: Any) -> None:
        """Make ``handle`` (or ``None``) current in this context."""

    def enter(
        self, limit: int, owner: Budget, ceiling: int | None = None, shares: bool = False
    ) -> Any:
        """Open a budget nested in the current one and make it current; return its handle.
        ``ceiling`` (bytes, at least ``limit``; ``None``: the meter's default) is where
        refusal starts; ``shares``: past it, the budget may borrow from the shared ceiling
        (request budgets of a server or middleware). Meters that refuse nothing ignore
        both."""

    def exit(self, handle: Any) -> bool:
        """Close ``handle``'s budget, make the previous one current; return ``tripped``."""

    def snapshot(self, handle: Any) -> Snapshot: ...


class NativeMeter:
    """Adapter over the C extension; the hooks are installed on the first ``enter``.

    ``enter`` and ``exit`` are the extension's own functions once the hooks are in place
    (one C call each per budget); the extension reinstalls its hooks by itself when
    someone (``tracemalloc.stop()``) restored older allocators.
    """

    name = "native"

    def __init__(self) -> None:
        from nea import _meter

        self._ext = _meter
        self.var: ContextVar[Any] = _meter.current
        self._installed_once = False
        from nea.meter import _clibs
        from nea.meter._region import env_mode

        _meter.region_enable(env_mode() == "on")
        self._c_libraries = _clibs.env_mode() == "on"
        # The C hook caches the current budget; only this setter keeps that cache right.
        self.set_current = _meter.set_current
        self.exit: Callable[[Any], bool] = _meter.exit
        self.enter: Callable[..., Any] = self._first_enter

    def _first_enter(
        self, limit: int, owner: Budget, ceiling: int | None = None, shares: bool = False
    ) -> Any:
        self._install()
        self.enter = self._ext.enter
        return self._ext.enter(limit, owner, ceiling, shares)

    def _install(self) -> None:
        from nea.meter import _clibs, _exits, _loop
        from nea.meter._imports import exempt_imports
        from nea.meter._numpy import install_if_imported

        self._ext.install()  # no region while tracemalloc's hooks are below ours (C)
        self._ext.set_trip_factory(self._trip_error)
        numpy_hook = functools.partial(install_if_imported, self._ext)
        clibs_hook = None
        if self._c_libraries:
            clibs_hook = functools.partial(_clibs.patch, self._ext)
            clibs_hook()
        exempt_imports(self.var, self._ext.set_current, {"numpy": numpy_hook}, clibs_hook)
        numpy_hook()
        self._push_loop_frames()
        if not self._installed_once:
            self._installed_once = True
            _loop._on_change.append(self._push_loop_frames)
            _exits._on_change.append(self._push_loop_frames)
            # Stop charging before the interpreter tears contexts down.
            atexit.register(self._ext.disable)

    def _push_loop_frames(self) -> None:
        from nea.meter._exits import exit_codes
        from nea.meter._loop import dispatch_codes

        self._ext.set_loop_frames(dispatch_codes())
        self._ext.set_exit_frames(exit_codes())

    def snapshot(self, handle: Any) -> Snapshot:
        return Snapshot(*self._ext.snapshot(handle))

    def _trip_error(
        self, handle: Any, in_thread: int, thread_code: CodeType | None = None
    ) -> BaseException | type[BaseException] | None:
        """What the meter raises at a tripped budget's safe point (called by the C
        extension, uncharged): the budget's ``BudgetExceeded``, or in a worker thread the
        class CPython instantiates there. ``None`` declines the spot: the code running now
        (the caller's frame; in a worker thread, ``thread_code``) is the standard
        library's, anyio's or nea's own, whose internal state (locks, events, cancel
        scopes) an exception must not cut through; the delivery then waits for the
        budget's next allocation past its limit."""
        if in_thread:
            if thread_code is not None and _in_library(thread_code.co_filename):
                return None
        elif _in_library(sys._getframe(1).f_code.co_filename):
            return None
        snap = self.snapshot(handle)
        if in_thread:
            return thread_delivery(snap.statistics(), snap.refused_size)
        return BudgetExceeded(snap.statistics(), snap.refused_size)


def _library_prefixes() -> tuple[str, ...]:
    """Directories of code where a delivered trip would cut through library internals:
    the standard library (not its site-packages), anyio and nea itself. Found without
    importing anything (``os`` lives in the standard library's directory)."""
    import importlib.util

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # nea/
    dirs = [os.path.dirname(os.__file__), package]
    spec = importlib.util.find_spec("anyio")
    if spec is not None and spec.origin:
        dirs.append(os.path.dirname(spec.origin))
    return tuple(os.path.join(path, "") for path in dirs)


_SITE_DIRS = ("site-packages", "dist-packages")
_LIBRARY_PREFIXES = _library_prefixes()


def _in_library(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return True
    for prefix in _LIBRARY_PREFIXES:
        if filename.startswith(prefix):
            # not a third-party package installed under the standard library's directory
            return not filename[len(prefix) :].startswith(_SITE_DIRS)
    return False


_meters: dict[str, Meter] = {}
_active: Meter | None = None


def native_available() -> bool:
    """True when the C extension imports on this interpreter."""
    try:
        from nea import _meter  # noqa: F401
    except ImportError:
        return False
    return True


def get_meter(name: str) -> Meter:
    """The process-wide meter called ``name`` (created on first use)."""
    meter = _meters.get(name)
    if meter is None:
        if name == "native":
            if not native_available():
                raise ConfigError(
                    "NEA_METER=native but the C extension nea._meter is not built for this "
                    "interpreter; reinstall nea with a C compiler available, or use "
                    "NEA_METER=tracemalloc"
                )
            meter = NativeMeter()
        elif name == "tracemalloc":
            meter = TracemallocMeter()
        else:
            raise ConfigError(f"unknown meter {name!r}; expected one of {METER_NAMES}")
        _meters[name] = meter
    return meter


def _choose() -> Meter:
    wanted = os.environ.get("NEA_METER", "auto").strip().lower() or "auto"
    if wanted == "auto":
        return get_meter("native" if native_available() else "tracemalloc")
    if wanted not in METER_NAMES:
        raise ConfigError(
            f"NEA_METER={wanted!r} is not a meter; expected 'auto', 'native' or 'tracemalloc'"
        )
    return get_meter(wanted)


def active_meter() -> Meter:
    """The meter new budgets use (chosen from ``NEA_METER`` on first use)."""
    global _active
    if _active is None:
        _active = _choose()
    return _active


def use_meter(name: str) -> Meter:
    """Switch the meter new budgets use; returns the previous one (tests use this)."""
    global _active
    previous = active_meter()
    _active = get_meter(name)
    return previous


def restore_meter(meter: Meter) -> None:
    global _active
    _active = meter


def backend() -> str:
    """``"native"`` or ``"tracemalloc"``: the meter ``nea.budget()`` uses."""
    return active_meter().name
