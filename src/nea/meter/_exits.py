"""nea's own budget exits, where the native meter's delivery of a trip waits.

Owns: ``exit_codes()`` and ``register_exit_frame()``. Closing a budget (``Budget.__exit__``,
admission's request path) must never fail on the budget's own trip, so a delivery due
while one of these functions is the innermost frame waits for the budget's next
allocation past its limit. Imports nothing heavy: ``nea.meter._budget`` uses it at import.
Must not import the C extension (``_select`` pushes the codes to it).
"""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType
from typing import Any

_exits: list[Callable[..., Any]] = []
_on_change: list[Callable[[], None]] = []


def exit_codes() -> tuple[CodeType, ...]:
    """Code objects of the functions registered with ``register_exit_frame``."""
    return tuple(f.__code__ for f in _exits)


def register_exit_frame(function: Callable[..., Any]) -> None:
    """Declare ``function`` as one that leaves a budget (closes it): a trip's delivery due
    while it is the innermost frame waits, so closing never fails on the budget's own trip.
    """
    if not isinstance(getattr(function, "__code__", None), CodeType):
        raise TypeError(f"expected a Python function, got {function!r}")
    _exits.append(function)
    for callback in _on_change:
        callback()
