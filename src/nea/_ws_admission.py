"""Budgeted admission of WebSocket connections: the WebSocket pool.

Owns: ``WebSocketAdmission``, used by nea's server and by
``nea.middleware.MemoryBudgetMiddleware``. Must not import the server, the HTTP layer, the
CLI or any web framework (plain ASGI, like ``nea._admission``).

The model (docs/websockets.md): a WebSocket is long-lived, so it never takes one of the
request slots. It takes a slot of its own pool (``--ws-slots``) for its whole life and runs
inside one budget (``--ws-budget``) from the ``websocket.connect`` to its end: everything
its handler allocates and keeps alive (buffers, per-connection state) is charged to it, and
is un-charged when freed. A full pool denies new connections at once (503 through the
denial-response extension, else a close before accept, which the server answers 403);
there is no queue, because a WebSocket client waits for the handshake answer, not a slot.

A handler whose budget trips gets ``BudgetExceeded`` at its next safe point, and every
message it sends after the trip is refused with that error; the connection is closed with
1011 (or denied 500 before it was accepted) and one warning line goes to ``nea.error``.
The other connections carry on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

from nea._admission import SlotPool, _check_budget, _check_count, _counts_as_trip, _with_budget
from nea._sizes import format_size
from nea._types import ASGIApp, Message, Receive, Scope, Send
from nea.meter import Budget, _door

logger = logging.getLogger("nea.error")

NO_WS_SLOT_BODY = b"Service Unavailable: every WebSocket slot is busy, retry later"
OUT_OF_MEMORY_BODY = b"Internal Server Error: Out of Memory"
# RFC 6455 §7.4.1: the server met a condition that prevented it from fulfilling the request.
CLOSE_INTERNAL_ERROR = 1011


class _GuardedSend:
    """The app's ``send``: refuses every message once the budget tripped, and notes
    whether the handshake was answered (accepted, closed or denied)."""

    __slots__ = ("accepted", "answered", "budget", "handle", "send")

    def __init__(self, send: Send, budget: Budget) -> None:
        self.send = send
        self.budget = budget
        self.handle: Any = None
        self.accepted = False
        self.answered = False

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain function returning the server's awaitable: no coroutine of its own per
        # message. Raising here is raising from the app's ``await send(...)``.
        handle = self.handle
        if handle is not None and _door.tripped(handle):
            raise _door.exceeded(self.budget)
        if not self.answered:
            kind = message.get("type")
            self.accepted = kind == "websocket.accept"
            self.answered = True
        return self.send(message)


class WebSocketAdmission:
    """Runs ASGI ``websocket`` connections in a pool of ``slots``, each inside its own
    budget of ``budget`` bytes (``None``: the pool only, nothing metered). Invalid values
    raise ``ConfigError`` naming the option."""

    def __init__(self, *, budget: int | str | None, slots: int | None) -> None:
        self.limit = _check_budget(budget)
        _check_count("ws_slots", slots, low=1)
        self._pool = SlotPool(slots, 0)
        self.open = 0
        self.served = 0
        self.tripped = 0
        self.rejected = 0

    @property
    def slots(self) -> int | None:
        return self._pool.slots

    async def admit(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one connection of ``app``; other scope types go to ``app`` untouched.
        Raises what the app raised, except a budget trip (closed 1011 or denied 500)."""
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        pool = self._pool
        if not pool.try_acquire():
            self.rejected += 1
            await _deny(scope, send, 503, NO_WS_SLOT_BODY)
            return
        self.open += 1
        try:
            if self.limit is None:
                await app(scope, receive, send)
                return
            await self._run_budgeted(self.limit, app, scope, receive, send)
        finally:
            self.open -= 1
            self.served += 1
            pool.release()

    async def _run_budgeted(
        self, limit: int, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        connection_budget, enter, leave = _door.request_budget(limit)
        # Built before the budget opens: admission's objects are not the handler's memory.
        scope = _with_budget(scope, connection_budget)
        guarded = _GuardedSend(send, connection_budget)
        handle = guarded.handle = enter(limit, connection_budget, None, True)
        _door.bind(connection_budget, handle)
        try:
            await app(scope, receive, guarded)
        except BaseException as exc:
            tripped = leave(handle)
            if not (tripped and _counts_as_trip(exc)):
                raise
        else:
            tripped = leave(handle)
        guarded.handle = None
        if tripped:
            self.tripped += 1
            _log_trip(scope, connection_budget)
            if guarded.accepted:
                await _send_quietly(send, {"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
            elif not guarded.answered:
                await _deny(scope, send, 500, OUT_OF_MEMORY_BODY)


_door.leaves_budgets(WebSocketAdmission._run_budgeted)


async def _deny(scope: Scope, send: Send, status: int, body: bytes) -> None:
    """Refuse a handshake with ``status`` when the server offers the denial response,
    else with a close before accept (the server answers 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await _send_quietly(
            send, {"type": "websocket.http.response.start", "status": status, "headers": headers}
        )
        await _send_quietly(send, {"type": "websocket.http.response.body", "body": body})
    else:
        await _send_quietly(send, {"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})


async def _send_quietly(send: Send, message: Message) -> None:
    with contextlib.suppress(OSError):  # the client is gone already
        await send(message)


def _log_trip(scope: Scope, connection_budget: Budget) -> None:
    stats = connection_budget.statistics()
    logger.warning(
        "out of memory: WebSocket %s exceeded its budget of %s (peak %s); closed with 1011",
        scope.get("path", "?"),
        format_size(stats.limit),
        format_size(stats.peak),
    )
