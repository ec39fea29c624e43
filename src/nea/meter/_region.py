"""The region switch of the native meter: where outermost budgets' blocks come from.

Owns: turning the preallocated region on or off for the process (``NEA_REGION``,
``--region``), mapping it with the server's geometry (``configure``), giving idle pages
back (``release``) and its counters (``info``). The region itself is C
(csrc/region.c, docs/internals/region.md). Must not import ``nea.meter._budget`` or the
server.
"""

from __future__ import annotations

import sys
from typing import Any

from nea.meter._env import MODES, switch

REGION_MODES = MODES


def _ext() -> Any | None:
    try:
        from nea import _meter
    except ImportError:
        return None
    return _meter if hasattr(_meter, "region_configure") else None


def supported() -> bool:
    """True where the native meter has a region (POSIX with ``mmap``)."""
    return _ext() is not None and sys.platform != "win32"


def env_mode() -> str:
    """``NEA_REGION`` (``on`` unless set to ``off``); ``ConfigError`` for anything else."""
    return switch("NEA_REGION")


def set_enabled(on: bool) -> bool:
    """Serve outermost budgets opened from now on from the region (or not); returns the
    previous setting. Budgets already open keep what they have."""
    ext = _ext()
    if ext is None:
        return False
    previous = bool(ext.region_info()["enabled"])
    ext.region_enable(on)
    return previous


def enabled() -> bool:
    ext = _ext()
    return ext is not None and bool(ext.region_info()["enabled"])


def configure(slots: int, slot_bytes: int, *, prefault: bool = False) -> bool:
    """Map the region as ``slots`` slots of ``slot_bytes``. Returns False when a region
    with blocks still alive was mapped before with another geometry (it is kept: escaped
    blocks may live in it). Raises ``OSError`` when the mapping fails."""
    ext = _ext()
    if ext is None:
        return False
    configured: bool = ext.region_configure(slots, slot_bytes, prefault)
    return configured


def release() -> int:
    """Give the pages of free, reset slots back to the OS; returns the bytes released."""
    ext = _ext()
    if ext is None:
        return 0
    released: int = ext.region_release()
    return released


def info() -> dict[str, int]:
    """The region's geometry and counters (empty without the native meter)."""
    ext = _ext()
    if ext is None:
        return {}
    counters: dict[str, int] = ext.region_info()
    return counters
