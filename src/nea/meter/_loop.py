"""The event loop's dispatch frames, where the native meter never refuses an allocation
nor delivers a trip.

Owns: ``dispatch_codes()`` and ``register_loop_frame()``. A task's context (and so its
budget) is also current while the event loop runs the task's machinery: scheduling its next
step, waking it, completing it. An allocation refused there raises ``MemoryError`` inside
the loop instead of the task, and the task is never resumed (it hangs; seen with a task that
kept allocating after its trip). So allocations whose innermost Python frame is
the loop's dispatch are charged but never refused. For loops written in C (uvloop), the
innermost Python frame is whatever called ``run_until_complete``: asyncio's runners,
anyio's backport of ``asyncio.Runner``, uvicorn's ``asyncio_run``; a server that drives the
loop from its own function registers it with ``register_loop_frame``.

Must not import the server or the C extension (``_select`` pushes the codes to it).
"""

from __future__ import annotations

import asyncio.base_events
import asyncio.events
import asyncio.runners
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any

# (module, dotted attribute) of dispatch functions in libraries, used when already imported
_OPTIONAL = (
    ("anyio._backends._asyncio", "Runner.run"),
    ("uvicorn._compat", "asyncio_run"),
    ("hypercorn.asyncio.run", "_run"),
)

_registered: list[Callable[..., Any]] = []
_on_change: list[Callable[[], None]] = []


def _resolve(module: str, dotted: str) -> Any:
    obj: Any = sys.modules.get(module)
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def dispatch_codes() -> tuple[CodeType, ...]:
    """Code objects of the known dispatch functions (asyncio's always)."""
    loop = asyncio.base_events.BaseEventLoop
    functions: list[Any] = [
        asyncio.events.Handle._run,
        loop.run_forever,
        loop.run_until_complete,
        loop._run_once,  # type: ignore[attr-defined]
        asyncio.runners.run,
        getattr(getattr(asyncio.runners, "Runner", None), "run", None),
        *(_resolve(module, dotted) for module, dotted in _OPTIONAL),
        *_registered,
    ]
    codes = (getattr(f, "__code__", None) for f in functions)
    return tuple(c for c in codes if isinstance(c, CodeType))


def register_loop_frame(function: Callable[..., Any]) -> None:
    """Declare ``function`` as one that runs the event loop (calls ``run_until_complete``
    or ``run_forever``): allocations whose innermost Python frame is it are never refused.
    """
    if not isinstance(getattr(function, "__code__", None), CodeType):
        raise TypeError(f"expected a Python function, got {function!r}")
    _registered.append(function)
    for callback in _on_change:
        callback()
