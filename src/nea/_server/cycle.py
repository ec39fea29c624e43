"""One request/response exchange between a connection and the ASGI app.

Owns: ``receive`` (buffered body, ``Expect: 100-continue``, ``http.disconnect``), ``send``
(ASGI message order, response backpressure), and what happens when the app fails or returns
early. The same cycle serves every parser backend. Must not import ``nea.server``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from nea._http.errors import ResponseError
from nea._http.parser import RequestHead
from nea._http.response import CONTINUE_RESPONSE, Response
from nea._server.state import log_access, logger
from nea._types import Message
from nea.meter import Budget, _door

if TYPE_CHECKING:
    from nea._server.state import ServerState


class CycleHost(Protocol):
    """All a cycle may use of the connection that carries it: the narrow interface
    between one exchange and its connection (``HTTPProtocol`` for HTTP/1.1; a later
    HTTP/2 stream would provide the same). The cycle never touches the transport."""

    state: ServerState
    loop: asyncio.AbstractEventLoop
    closed: bool  # nothing more can be written
    write_paused: bool  # the transport's buffer is above its high-water mark

    def write(self, data: bytes) -> None:
        """Write unless closed (the server's occasional writes: 100 Continue)."""

    def write_now(self, data: bytes) -> None:
        """The transport's own write: the response path, after checking ``closed``."""

    async def drain(self) -> None: ...

    def abort(self) -> None: ...

    def send_error(self, status: int, reason: str) -> None: ...

    def body_consumed(self, cycle: RequestCycle) -> None: ...

    def response_complete(self, cycle: RequestCycle) -> None: ...


_DISCONNECT: Message = {"type": "http.disconnect"}


class RequestCycle:
    """ASGI ``receive``/``send`` for one request, fed by ``HTTPProtocol``."""

    __slots__ = (
        "_body",
        "_body_size",
        "_headers",
        "_last_body_sent",
        "_status",
        "_waiter",
        "app_handle",
        "body_complete",
        "budget",
        "conn",
        "continue_sent",
        "disconnected",
        "head",
        "head_written",
        "response",
        "response_complete",
        "response_started",
        "scope",
        "started_at",
    )

    def __init__(self, conn: CycleHost, head: RequestHead, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.head = head
        self.scope = scope
        self.response = Response(head.method == "HEAD", head.http_version == "1.0", head.keep_alive)
        self.started_at = time.perf_counter()
        self._body: list[bytes] = []
        self._body_size = 0
        self.body_complete = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.head_written = False
        self._status = 0
        self._headers: Iterable[tuple[bytes, bytes]] = ()
        self._last_body_sent = False
        self.continue_sent = False
        self._waiter: asyncio.Future[None] | None = None
        # Set by admission (this cycle is its ``Exchange``): the request's budget just
        # before the app runs, and its meter handle while the app runs.
        self.budget: Budget | None = None
        self.app_handle: Any = None

    # fed by the protocol ------------------------------------------------------------------

    @property
    def buffered_body_bytes(self) -> int:
        return self._body_size

    def feed_body(self, data: bytes) -> None:
        if self.response_complete:
            return  # the app answered without reading this body: discard it
        self._body.append(data)
        self._body_size += len(data)
        self._wake()

    def discard_body(self) -> None:
        """Drop buffered body bytes the app will never read (its response is complete)."""
        self._body = []
        self._body_size = 0

    def end_body(self) -> None:
        self.body_complete = True
        if self._waiter is not None:
            self._wake()

    def mark_disconnected(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = self.conn.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # the app side -------------------------------------------------------------------------

    def peak(self) -> int | None:
        """The peak memory of the request's budget so far (None without a budget)."""
        return None if self.budget is None else self.budget.peak

    async def run(self) -> None:
        """Run the app through admission (slot, budget); turn its failures into a 500 or a
        closed connection. Admission answers budget trips and "no slot" itself."""
        state = self.conn.state
        try:
            await state.admission.admit(
                state.app,
                self.scope,
                self.receive,
                self.send,
                wait_disconnect=self.wait_disconnect,
                exchange=self,
            )
        except asyncio.CancelledError:
            self.conn.abort()
            raise
        except ResponseError:
            pass  # already logged by send(), connection already closed
        except BaseException as exc:
            if self.budget is not None and self.budget.tripped:
                # Tripped after the response started: admission logged the one warning line;
                # abort so the client cannot take the truncated body for a whole one.
                if self.conn.state.access_log and self.response_started:
                    self.log_access(self.response.status, aborted=True)
                self.conn.abort()
            else:
                logger.error("Exception in ASGI application", exc_info=exc)
                if not self.response_started:
                    self.conn.send_error(500, "Internal Server Error")
                else:
                    self.conn.abort()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.response_started:
                if not self.disconnected:
                    logger.error("ASGI callable returned without starting a response")
                    self.conn.send_error(500, "Internal Server Error")
            elif not self.response_complete:
                if not self.disconnected:
                    logger.error("ASGI callable returned without completing the response")
                self.conn.abort()

    def log_access(self, status: int, *, aborted: bool = False) -> None:
        """This request's ``nea.access`` line (the caller checked ``state.access_log``)."""
        head = self.head
        log_access(
            self.scope["client"],
            head.method,
            head.target,
            head.http_version,
            status,
            time.perf_counter() - self.started_at,
            self.peak(),
            aborted=aborted,
        )

    async def wait_disconnect(self) -> None:
        """Return once the client is gone, without reading the body (admission uses it to
        drop a queued request whose client left, and to send no ``100 Continue`` then)."""
        while not self.disconnected:
            await self._wait()

    async def receive(self) -> Message:
        if self._last_body_sent:
            # The body is consumed; per the spec, receive now waits for the disconnect.
            while not (self.disconnected or self.response_complete):
                await self._wait()
            return _DISCONNECT
        if not self._body and not self.body_complete and not self.disconnected:
            if self.head.expect_continue and not self.continue_sent:
                self.continue_sent = True
                if not self.response_started:
                    # The server's write, outside the request's budget (see send()).
                    conn = self.conn
                    conn.state.context.run(type(conn).write, conn, CONTINUE_RESPONSE)
            while not self._body and not self.body_complete and not self.disconnected:
                await self._wait()
        if self.disconnected and not self.body_complete:
            return _DISCONNECT
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        had = self._body_size
        self._body = []
        self._body_size = 0
        more_body = not self.body_complete
        self._last_body_sent = not more_body
        if had:
            self.conn.body_consumed(self)
        return {"type": "http.request", "body": data, "more_body": more_body}

    async def send(self, message: Message) -> None:
        handle, request_budget = self.app_handle, self.budget
        if handle is not None and handle.tripped and request_budget is not None:
            # Nothing the app sends after its budget tripped may reach the client (admission
            # answers 500 or has the connection aborted); the app sees the budget's error.
            raise _door.exceeded(request_budget)
        if self.disconnected:
            return
        # Everything the server does for this message (checking it, encoding the head,
        # writing, the access log, starting the next pipelined request) is the server's
        # work, not the app's memory: it runs in the server's own context, outside the
        # request's budget. Charged to the request, it could be refused at the budget's
        # edge after the app's last allocation, losing a response that was already whole.
        # (The plain function, not a bound method: nothing is allocated in the request.)
        if self.conn.state.context.run(RequestCycle._send, self, message):
            await self.conn.drain()

    def _send(self, message: Message) -> bool:
        """Handle one message of the app; return whether to wait for the socket to drain."""
        message_type = message["type"]
        if not self.response_started:
            if message_type != "http.response.start":
                self._fail(f"expected 'http.response.start', got {message_type!r}")
            self._start(message)
            return False
        if self.response_complete:
            self._fail(f"expected nothing after the response completed, got {message_type!r}")
        if message_type != "http.response.body":
            self._fail(f"expected 'http.response.body', got {message_type!r}")
        more_body = message.get("more_body", False)
        body = message.get("body", b"")
        try:
            if self.head_written:
                data = self.response.frame(body, more_body)
            else:
                self.head_written = True
                data = self._first_body(body, more_body)
                pending = self.conn.state.pending_heads
                if pending and pending[-1] is self:  # the usual case: it needs no flush
                    pending[-1] = None
        except ResponseError as exc:
            self._fail(str(exc))
        conn = self.conn
        if data and not conn.closed:
            conn.write_now(data)
        if not more_body:
            self.response_complete = True
            if self._waiter is not None:
                self._wake()
            conn.response_complete(self)
            return False
        return conn.write_paused

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 999:
            self._fail(f"expected an int 'status' in 'http.response.start', got {status!r}")
        self._status = status
        self._headers = message.get("headers", ())
        self.response_started = True
        # The head normally leaves with the first body message, in the same write. If the
        # app awaits something else first (a stream waiting for its first item), the head
        # goes out on its own on the next loop iteration instead of waiting with it.
        self.conn.state.flush_head_soon(self)

    def flush_head(self) -> None:
        """Write the head now if no body message has carried it yet."""
        if self.head_written or self.disconnected or self.conn.closed:
            return
        self.head_written = True
        try:
            data = self._first_body(b"", True)
        except ResponseError as exc:
            logger.error(
                "ASGI protocol error in %s %r: %s", self.head.method, self.head.target, exc
            )
            self.disconnected = True
            self.conn.abort()
            return
        self.conn.write_now(data)

    def _first_body(self, body: bytes, more_body: bool) -> bytes:
        state = self.conn.state
        response = self.response
        if state.shutting_down:
            response.keep_alive = False
        head = self.head
        if head.expect_continue and not self.continue_sent and not self.body_complete:
            # The client may still hold its body back, waiting for a 100 Continue that will
            # never come: the connection closes after this response, and the head says so.
            response.keep_alive = False
        headers, self._headers = self._headers, ()
        return response.head_and_body(self._status, headers, state.default_headers, body, more_body)

    def _fail(self, problem: str) -> NoReturn:
        """Log an app protocol violation, close the connection and raise into the app."""
        logger.error(
            "ASGI protocol error in %s %r: %s", self.head.method, self.head.target, problem
        )
        self.disconnected = True
        self.conn.abort()
        raise ResponseError(problem)
