"""Event loop selection (``--loop auto|asyncio|uvloop``) and running a coroutine on it.

Owns: the small lazy registry of loop implementations and ``run_on_loop``, which runs one
coroutine to completion on a fresh loop and closes it the way ``asyncio.run`` does. uvloop is
imported only when selected (or probed by ``auto``), so ``import nea`` stays cheap.
Must not import the server, the HTTP layers or logging setup.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from nea._errors import ConfigError
from nea.meter._door import register_loop_frame

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _asyncio_factory() -> LoopFactory:
    return asyncio.new_event_loop


def _uvloop_factory() -> LoopFactory:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        raise ConfigError(
            "--loop uvloop: uvloop is not installed; install it with 'pip install uvloop' "
            "or use --loop asyncio"
        ) from exc
    factory: LoopFactory = uvloop.new_event_loop
    return factory


# name -> function returning a loop factory; each imports its implementation lazily.
_REGISTRY: dict[str, Callable[[], LoopFactory]] = {
    "asyncio": _asyncio_factory,
    "uvloop": _uvloop_factory,
}


def resolve_loop(name: str) -> str:
    """The concrete loop for ``name``: ``auto`` is uvloop when importable, else asyncio."""
    if name != "auto":
        if name not in _REGISTRY:
            choices = ", ".join(["auto", *_REGISTRY])
            raise ConfigError(f"--loop: expected one of {choices}, got {name!r}")
        return name
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    return "uvloop"


def loop_factory(name: str) -> LoopFactory:
    """A callable creating a new event loop of kind ``name`` (see ``resolve_loop``).

    Raises ``ConfigError`` when the selected implementation is not installed.
    """
    return _REGISTRY[resolve_loop(name)]()


def run_on_loop(main: Coroutine[Any, Any, T], *, loop: str) -> T:
    """Run ``main`` on a new loop of kind ``loop`` and close the loop afterwards.

    Works the same on Python 3.10 (no ``asyncio.Runner(loop_factory=...)``) and later: tasks
    left over are cancelled, async generators and the default executor are shut down, and
    the loop is closed, as ``asyncio.run`` does. Exceptions from ``main`` propagate.
    """
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()  # never awaited; close it so no "never awaited" warning is emitted
        raise
    event_loop = factory()
    try:
        asyncio.set_event_loop(event_loop)
        return event_loop.run_until_complete(main)
    finally:
        try:
            _cancel_remaining_tasks(event_loop)
            event_loop.run_until_complete(event_loop.shutdown_asyncgens())
            event_loop.run_until_complete(event_loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            event_loop.close()


def _cancel_remaining_tasks(event_loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(event_loop) if not task.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    event_loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            event_loop.call_exception_handler(
                {
                    "message": "unhandled exception in a task cancelled at shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


# With a loop written in C (uvloop) the innermost Python frame while the loop runs a task's
# machinery (waking it, scheduling its next step) is the function that called
# run_until_complete: these two. Declared to the meter so those allocations, made in the
# task's context, are charged but never refused (a refusal there would leave the task
# pending forever; see nea/meter/_loop.py).
register_loop_frame(run_on_loop)
register_loop_frame(_cancel_remaining_tasks)
