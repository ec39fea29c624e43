"""Budgeted request admission: the slots, the wait queue, one memory budget per request,
and the two responses admission itself produces (500 Out of Memory, 503 no slot).

Owns: ``Admission``, the ONE implementation used by nea's server, by
``nea.middleware.MemoryBudgetMiddleware`` and by ``nea.testing``; ``SlotPool``;
``AdmissionStatistics``. Must not import the server, the HTTP layer, the CLI or any web
framework: it speaks plain ASGI and works under any ASGI server (asyncio or trio, via anyio).

How one ``http`` request goes through ``Admission``:

1. **Slot.** A free slot is taken at once (no task, no allocation beyond a counter). When
   all slots are busy the request waits in a FIFO queue of at most ``queue`` requests for
   at most ``queue_timeout`` seconds; a full queue or a timeout answers ``503`` with
   ``retry-after: 1``. Slots are handed over directly to the oldest waiter, so a newcomer
   never overtakes the queue.
2. **Disconnect while queued.** To notice a client that gives up while queued, admission
   reads from ``receive`` while waiting and replays what it read to the app, so the app
   sees exactly the messages the server produced (nea's own server instead passes a
   ``wait_disconnect`` signal, so nothing is read). It reads at most one body message (a
   request whose body is still streaming is not drained: the app gets it later, bounded
   by the server's read buffer), and when that message completes the body it reads once
   more, which in every ASGI server returns only on disconnect. A request with
   ``expect: 100-continue`` is not read while queued: reading would make the server send
   ``100 Continue`` and invite a body that a 503 may refuse; such a request that
   disconnects while queued reaches the app, which sees ``http.disconnect``.
3. **Budget.** The app runs inside ``nea.budget(budget)``, nested inside the budget that
   is already current if any (e.g. nea's server's, when the middleware runs under nea):
   one meter, both budgets charged. The budget is ``scope["extensions"]["nea.budget"]``
   in a shallow copy of the scope; its ``statistics()`` are final once the request ends.
4. **Trip.** When the budget trips (the app raised the ``MemoryError``, or swallowed it and
   carried on), ``send`` refuses every further message, so nothing the app produces after
   the trip reaches the client. If the response had not started, admission answers ``500``
   ``Internal Server Error: Out of Memory`` with ``connection: close``. If it had started,
   the exception is raised to the server, which must abort the connection so the client
   never takes a truncated body for a whole one. One warning line goes to ``nea.error``.
5. **Release.** The slot is given back when the app returns or is cancelled (e.g. the
   server cancels it because the client is gone). It is held while Starlette background
   tasks run after the response: they still run inside the request's budget.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from nea._errors import ConfigError
from nea._sizes import format_size, parse_size
from nea._types import ASGIApp, Message, Receive, Scope, Send
from nea.config import DEFAULT_QUEUE_TIMEOUT_SECONDS, default_queue
from nea.meter import Budget, BudgetExceeded, _door

logger = logging.getLogger("nea.error")
_request_budget = _door.request_budget
_bind = _door.bind

OUT_OF_MEMORY_BODY = b"Internal Server Error: Out of Memory"
NO_SLOT_BODY = b"Service Unavailable: every request slot is busy, retry later"

_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    """Counters of one ``Admission`` at one moment.

    ``slots`` is the number of slots (``None``: unlimited), ``busy`` the requests running
    the app now, ``waiting`` those queued for a slot. ``served`` counts requests that ran
    the app to its end (including the ``tripped`` ones, whose budget was exceeded),
    ``rejected`` those answered 503, ``abandoned`` those whose client left while queued.
    """

    slots: int | None
    busy: int
    waiting: int
    served: int
    tripped: int
    rejected: int
    abandoned: int


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class SlotPool:
    """A counting semaphore with a bounded FIFO queue and direct hand-over.

    Holds no event-loop objects between requests, so one pool can serve several loops
    one after the other (as test clients do). Not thread-safe: use it from one event loop.
    """

    def __init__(self, slots: int | None, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self.busy = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued before us."""
        if self.slots is None or (self.busy < self.slots and not self._waiters):
            self.busy += 1
            return True
        return False

    def can_wait(self) -> bool:
        return len(self._waiters) < self.queue

    async def wait_for_slot(self) -> None:
        """Queue until a slot is handed to us. Cancel it (timeout, disconnect) to give up."""
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release()  # handed over just as we gave up: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if any, else to the pool."""
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            waiter.event.set()
        else:
            self.busy -= 1


class _QueuedReceive:
    """``receive`` for a queued request: watches for a disconnect, replays what it read."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._buffered: deque[Message] = deque()
        self.gone = False

    async def watch_server(
        self, wait_disconnect: Callable[[], Awaitable[None]], on_disconnect: anyio.CancelScope
    ) -> None:
        """Watch through the server's own disconnect signal: nothing is read."""
        await wait_disconnect()
        self.gone = True
        on_disconnect.cancel()

    async def watch(self, on_disconnect: anyio.CancelScope) -> None:
        message = await self._receive()
        self._buffered.append(message)
        if message["type"] == "http.request" and not message.get("more_body", False):
            # The body is complete, so the next message can only be a disconnect.
            message = await self._receive()
            self._buffered.append(message)
        if message["type"] == "http.disconnect":
            self.gone = True
            on_disconnect.cancel()

    async def __call__(self) -> Message:
        if self._buffered:
            return self._buffered.popleft()
        return await self._receive()


class _ResponseGuard:
    """The app's ``send`` under servers other than nea's, and admission's ``Exchange``
    there: tracks the response and refuses messages once the budget tripped (also after
    the app returned, unlike nea's server, which admission alone may still send to)."""

    __slots__ = ("_send", "app_handle", "budget", "response_complete", "response_started")

    def __init__(self, send: Send, request_budget: Budget) -> None:
        self._send = send
        self.budget: Budget | None = request_budget  # never None here (typed as Exchange's)
        self.app_handle: Any = None
        self.response_started = False
        self.response_complete = False

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain method returning the server's awaitable: no coroutine of its own per
        # message. ``tripped`` reads the meter without allocating (native meter).
        request_budget = self.budget
        if request_budget is not None and request_budget.tripped:
            # Nothing the app sends after a trip may reach the client: not its own error
            # page (admission answers 500 instead), not the rest of a body that may now be
            # wrong. The app sees the budget's error again.
            raise _door.exceeded(request_budget)
        sending = self._send(message)
        # Marked once the server's send was called: if that call failed (the budget refused
        # the memory for it) the response is still unstarted, and admission can answer 500
        # instead of aborting. (nea's server does its own work for the message outside the
        # request's budget, so it cannot fail on the budget afterwards.)
        kind = message["type"]
        if kind == "http.response.start":
            self.response_started = True
        elif (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind == "http.response.pathsend"
        ):
            self.response_complete = True
        return sending


class Exchange(Protocol):
    """What a server that guards its own ``send`` gives admission instead of a wrapped
    ``send`` (nea's ``RequestCycle``), saving a wrapper object and a call per message.

    Admission sets ``budget`` to the request's budget and puts it in the scope's
    ``extensions`` in place (the server built that scope for this request alone), and sets
    ``app_handle`` to the budget's meter handle while the app runs, ``None`` after. While
    ``app_handle`` is set and ``app_handle.tripped`` is true, the server's ``send`` must
    raise ``BudgetExceeded`` and send nothing. ``response_started`` and
    ``response_complete`` report what the server sent.
    """

    budget: Budget | None
    app_handle: Any
    response_started: bool
    response_complete: bool


class Admission:
    """Runs ASGI ``http`` requests through slots and per-request memory budgets.

    ``budget`` is a size (``parse_size``) or ``None`` for slots without metering;
    ``slots`` ``None`` means unlimited concurrency (budgets only); ``queue`` is how many
    requests may wait for a slot (default ``2 × slots``); ``queue_timeout`` how long, in
    seconds. Invalid values raise ``ConfigError`` naming the option.
    """

    def __init__(
        self,
        *,
        budget: int | str | None,
        slots: int | None,
        queue: int | None = None,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT_SECONDS,
    ) -> None:
        self.limit = _check_budget(budget)
        _check_count("slots", slots, low=1)
        _check_count("queue", queue, low=0)
        if (
            isinstance(queue_timeout, bool)
            or not isinstance(queue_timeout, int | float)
            or not math.isfinite(queue_timeout)
            or queue_timeout < 0
        ):
            raise ConfigError(
                f"queue_timeout: expected a non-negative number of seconds, got {queue_timeout!r}"
            )
        if queue is None:
            queue = 0 if slots is None else default_queue(slots)
        self.queue_timeout = float(queue_timeout)
        self._pool = SlotPool(slots, queue)
        if slots is not None and self.limit is not None:
            # A tripped request may borrow what idle slots leave unused, up to the plan.
            _door.share_ceiling(slots * self.limit)
        self._served = 0
        self._tripped = 0
        self._rejected = 0
        self._abandoned = 0

    @property
    def slots(self) -> int | None:
        return self._pool.slots

    @property
    def queue(self) -> int:
        return self._pool.queue

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            slots=self._pool.slots,
            busy=self._pool.busy,
            waiting=self._pool.waiting,
            served=self._served,
            tripped=self._tripped,
            rejected=self._rejected,
            abandoned=self._abandoned,
        )

    def __call__(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[Budget | None]:
        """Run one request of ``app``; non-``http`` scopes go to ``app`` untouched.

        Raises what the app raised, except a budget trip before the response started
        (answered 500). A trip after the response started raises ``BudgetExceeded`` (or
        the app's exception): the server must abort the connection.
        """
        return self.admit(app, scope, receive, send)  # no coroutine of its own

    async def admit(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        on_budget: Callable[[Budget], None] | None = None,
        wait_disconnect: Callable[[], Awaitable[None]] | None = None,
        exchange: Exchange | None = None,
    ) -> Budget | None:
        """Like calling the instance, and return the request's budget (``None`` when the
        request never reached the app, or runs without a budget) for callers that report
        its statistics: the server's access log, ``nea.testing``. ``on_budget`` is called
        with the budget just before the app runs, for callers that need it earlier.
        ``wait_disconnect``, from a server that knows when its client is gone, returns
        when that happens; a queued request is then watched through it instead of by
        reading its body (nea's server passes it). ``exchange``, from a server that guards
        its own ``send`` (see ``Exchange``), replaces the wrapped ``send`` and ``on_budget``."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return None
        pool = self._pool
        if not pool.try_acquire():
            queued = await self._wait_for_slot(scope, receive, send, wait_disconnect)
            if queued is None:
                return None
            receive = queued
        try:
            if self.limit is None:
                try:
                    await app(scope, receive, send)
                except Exception:
                    self._served += 1  # an app that raised also ran to its end
                    raise
                self._served += 1
                return None
            # The budgeted path, inline: one coroutine per request, and the meter's enter
            # and exit called directly rather than through Budget's ``with`` methods.
            limit = self.limit
            request_budget, enter, leave = _request_budget(limit)
            app_send = send
            guarded: Exchange
            if exchange is None:
                if on_budget is not None:
                    on_budget(request_budget)
                # Built before the budget opens: admission's objects are not the app's memory.
                scope = _with_budget(scope, request_budget)
                app_send = guarded = _ResponseGuard(send, request_budget)
            else:
                # The server owns this scope and guards its own send (see ``Exchange``).
                scope["extensions"]["nea.budget"] = request_budget
                exchange.budget = request_budget
                guarded = exchange
            handle = guarded.app_handle = enter(limit, request_budget, None, True)
            _bind(request_budget, handle)
            error: BaseException | None = None
            try:
                await app(scope, receive, app_send)
            except BaseException as exc:
                # Closing comes first, so nothing below is charged to the budget.
                tripped = leave(handle)
                if not (tripped and _counts_as_trip(exc)) and not isinstance(exc, Exception):
                    raise  # cancelled: not served, whatever the budget says
                self._served += 1  # an app that raised also ran to its end
                if not tripped:
                    raise
                error = exc
            else:
                tripped = leave(handle)
                self._served += 1
            guarded.app_handle = None  # from here on, send is admission's, not the app's
            if tripped:
                self._tripped += 1
                try:
                    await self._on_trip(scope, request_budget, guarded, send, error)
                finally:
                    # `error`'s traceback holds this frame, whose `error` holds it: a cycle
                    # that would keep the tripped request's frames (and all they allocated,
                    # pinning region pages) alive until the next full collection.
                    error = None
            return request_budget
        finally:
            pool.release()

    async def _wait_for_slot(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        wait_disconnect: Callable[[], Awaitable[None]] | None,
    ) -> Receive | None:
        """Queue for a slot. Returns the ``receive`` to give the app, or ``None`` when the
        request was answered 503 or its client left (no slot is held then)."""
        if not self._pool.can_wait():
            self._rejected += 1
            await _send_text(send, 503, NO_SLOT_BODY, [(b"retry-after", b"1")])
            return None
        queued = _QueuedReceive(receive)
        admitted = False
        async with anyio.create_task_group() as watchers:
            if wait_disconnect is not None:
                watchers.start_soon(queued.watch_server, wait_disconnect, watchers.cancel_scope)
            elif not _expects_continue(scope):
                watchers.start_soon(queued.watch, watchers.cancel_scope)
            with anyio.move_on_after(self.queue_timeout):
                await self._pool.wait_for_slot()
                admitted = True
            watchers.cancel_scope.cancel()
        if admitted:
            return queued
        if queued.gone:
            self._abandoned += 1
            return None
        self._rejected += 1
        await _send_text(send, 503, NO_SLOT_BODY, [(b"retry-after", b"1")])
        return None

    async def _on_trip(
        self,
        scope: Scope,
        request_budget: Budget,
        exchange: Exchange,
        send: Send,
        error: BaseException | None,
    ) -> None:
        """Answer or abort a request whose budget tripped; runs outside its budget.

        ``error`` is what the app raised (``None`` when it swallowed the trip)."""
        _log_trip(scope, request_budget)
        if not exchange.response_started:
            await _send_text(send, 500, OUT_OF_MEMORY_BODY, [(b"connection", b"close")])
        elif not exchange.response_complete:
            if isinstance(error, BudgetExceeded) or not isinstance(error, MemoryError | None):
                raise error  # already the budget's error, or the app's own failure
            raise _door.exceeded(request_budget) from error
        # A response that completed before the trip (e.g. a background task tripped) was
        # whole and correct when it left; there is nothing left to answer or abort.


_door.leaves_budgets(Admission.admit)
_door.leaves_budgets(Admission._on_trip)


def _counts_as_trip(exc: BaseException) -> bool:
    """Does a ``BaseException`` the app raised after its budget tripped still mean "out of
    memory"? A library may turn the trip into one (pydantic-core's ``PanicException``);
    cancellation and the interpreter's own exits keep their meaning."""
    return not isinstance(
        exc, KeyboardInterrupt | SystemExit | GeneratorExit | anyio.get_cancelled_exc_class()
    )


def _with_budget(scope: Scope, request_budget: Budget) -> Scope:
    """A shallow copy of ``scope`` whose ``extensions`` (also copied) hold the budget."""
    extensions = scope.get("extensions")
    if extensions:
        return {**scope, "extensions": {**extensions, "nea.budget": request_budget}}
    return {**scope, "extensions": {"nea.budget": request_budget}}


def _log_trip(scope: Scope, request_budget: Budget) -> None:
    """One warning line from the budget's own numbers: whatever exception reached
    admission (a ``BudgetExceeded``, the bare ``MemoryError`` a thread pool re-raised, an
    app's own error, or none when the app swallowed the trip) the budget knows which
    allocation crossed its limit and where."""
    stats = request_budget.statistics()
    requested = request_budget.refused_size
    refused = f"; refused past its hard ceiling of {format_size(stats.ceiling)}"
    logger.warning(
        "out of memory: %s %s exceeded its budget of %s (peak %s); %s at %s crossed it%s",
        scope.get("method", "?"),
        scope.get("path", "?"),
        format_size(stats.limit),
        format_size(stats.peak),
        format_size(requested) if requested else "an unknown size",
        stats.refused_at or "an unknown site",
        refused if stats.refused else "",
    )


def _expects_continue(scope: Scope) -> bool:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    return any(
        name.lower() == b"expect" and value.lower() == b"100-continue" for name, value in headers
    )


async def _send_text(
    send: Send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [_TEXT_PLAIN, (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _check_budget(value: int | str | None) -> int | None:
    if value is None:
        return None
    try:
        limit = parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"budget: {exc}") from None
    if limit <= 0:
        raise ConfigError(f"budget: expected a size above 0 bytes, got {value!r}")
    return limit


def _check_count(name: str, value: int | None, *, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"{name}: expected a whole number of at least {low} or None, got {value!r}"
        )
