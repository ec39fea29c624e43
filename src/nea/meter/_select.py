"""Choosing the meter: the C extension ``nea._meter`` when it imports, else tracemalloc.

Owns: the ``Meter`` protocol every meter implements, the native meter's thin adapter,
``active_meter()`` and ``backend()``. ``NEA_METER`` selects: unset or ``auto`` (native
when available), ``native`` (native or a ``ConfigError``), ``tracemalloc``.
Must not import ``nea.meter._budget``.
"""

from __future__ import annotations

import atexit
import os
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from nea._errors import ConfigError
from nea.meter._stats import Snapshot
from nea.meter._tracemalloc import TracemallocMeter

if TYPE_CHECKING:
    from nea.meter._budget import Budget

METER_NAMES = ("native", "tracemalloc")


class Meter(Protocol):
    """What ``Budget`` needs from a meter. Handles are opaque but carry ``owner``."""

    name: str
    var: ContextVar[Any]

    def set_current(self, handle: Any) -> None:
        """Make ``handle`` (or ``None``) current in this context."""

    def open(self, limit: int, owner: Budget) -> Any: ...

    def close(self, handle: Any) -> Snapshot: ...

    def snapshot(self, handle: Any) -> Snapshot: ...


class NativeMeter:
    """Adapter over the C extension; the hooks are installed on the first ``open``."""

    name = "native"

    def __init__(self) -> None:
        from nea import _meter

        self._ext = _meter
        self.var: ContextVar[Any] = _meter.current
        self._installed_once = False
        # The C hook caches the current budget; only this setter keeps that cache right.
        self.set_current = _meter.set_current

    def open(self, limit: int, owner: Budget) -> Any:
        if not self._ext.installed():
            self._install()
        return self._ext.open(limit, owner)

    def _install(self) -> None:
        # Installed again if someone (tracemalloc.stop()) restored older allocators.
        from nea.meter import _loop
        from nea.meter._imports import exempt_imports

        first = not self._installed_once
        self._ext.install()
        exempt_imports(self.var, self._ext.set_current)
        self._push_loop_frames()
        if first:
            self._installed_once = True
            _loop._on_change.append(self._push_loop_frames)
            # Stop charging before the interpreter tears contexts down.
            atexit.register(self._ext.disable)

    def _push_loop_frames(self) -> None:
        from nea.meter._loop import dispatch_codes

        self._ext.set_loop_frames(dispatch_codes())

    def close(self, handle: Any) -> Snapshot:
        return Snapshot(*self._ext.close(handle))

    def snapshot(self, handle: Any) -> Snapshot:
        return Snapshot(*self._ext.snapshot(handle))


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
