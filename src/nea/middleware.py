"""Per-request memory budgets for ASGI apps served by any server (uvicorn, hypercorn, ...).

Owns: ``MemoryBudgetMiddleware``, a thin pure-ASGI shell over ``nea._admission.Admission``,
so the middleware answers exactly like nea's own server (500 Out of Memory, 503 when every
slot is busy, abort after the response started). Must not import the server, the CLI or any
web framework; it works with Starlette's ``Middleware(...)``/``add_middleware`` because
those only need ``__init__(app, **options)`` and ``__call__(scope, receive, send)``.
"""

from __future__ import annotations

from nea._admission import Admission, AdmissionStatistics
from nea._types import ASGIApp, Receive, Scope, Send
from nea._ws_admission import WebSocketAdmission
from nea.config import DEFAULT_BUDGET_BYTES, DEFAULT_QUEUE_TIMEOUT_SECONDS, default_queue
from nea.meter._door import wake_running_loop

__all__ = ["AdmissionStatistics", "MemoryBudgetMiddleware"]


class MemoryBudgetMiddleware:
    """Run every ``http`` request of ``app`` inside its own memory budget.

    ``budget``: per-request limit, bytes or a size string (default: nea's, 32 MiB). ``slots``: how
    many requests may run at once (``None``: no limit, budgets only); further requests
    wait up to ``queue_timeout`` seconds in a FIFO queue of ``queue`` places (default
    ``2 × slots``) and get ``503`` with ``retry-after: 1`` when they cannot get a slot.
    ``ws_budget``: when given, every ``websocket`` connection runs inside its own budget of
    that size for its whole life, in a pool of ``ws_slots`` connections (``None``: no
    limit) apart from the request slots; a connection whose handler exceeds it is closed
    with 1011 (denied 500 before accept), one past the pool is denied 503 (see
    docs/websockets.md). Without it, ``websocket`` scopes pass through untouched, as
    ``lifespan`` always does.

    No task group wraps the app: it runs in the server's own task, so the budget (a
    context variable) follows it into the tasks and threads it starts.
    Invalid options raise ``nea.ConfigError``.
    """

    def __init__(
        self,
        app: ASGIApp,
        budget: int | str = DEFAULT_BUDGET_BYTES,
        slots: int | None = None,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT_SECONDS,
        queue: int | None = None,
        ws_budget: int | str | None = None,
        ws_slots: int | None = None,
    ) -> None:
        self.app = app
        self.ws_admission = (
            None if ws_budget is None else WebSocketAdmission(budget=ws_budget, slots=ws_slots)
        )
        if queue is None and slots is not None:
            queue = default_queue(slots)
        self.admission = Admission(
            budget=budget, slots=slots, queue=queue, queue_timeout=queue_timeout
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A trip owed to a worker thread (a FastAPI ``def`` endpoint, ``to_thread``) is
        # delivered from the main thread: have such threads wake this server's loop.
        wake_running_loop()
        if scope["type"] == "websocket" and self.ws_admission is not None:
            await self.ws_admission.admit(self.app, scope, receive, send)
            return
        await self.admission(self.app, scope, receive, send)

    def statistics(self) -> AdmissionStatistics:
        """Slots busy, requests waiting, served, tripped, rejected, abandoned."""
        return self.admission.statistics()
