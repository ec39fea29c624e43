"""``ContextThreadPoolExecutor``: a thread pool whose work runs in the submitter's context.

Owns the executor nea's server makes the event loop's default (so ``run_in_executor(None,
fn)`` is charged to the request that called it, as ``asyncio.to_thread`` and
``anyio.to_thread`` already are) and that apps can use for their own pools. Must not import
the server.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` that runs each submitted call inside a copy of the context
    that submitted it, as ``asyncio.to_thread`` does: contextvars (and so the current
    ``nea.budget``) follow the call into the worker thread, and the memory it allocates
    is charged to the submitter's budget."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
