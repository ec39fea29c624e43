"""The asyncio ``Protocol`` of one HTTP/1.1 connection.

Owns: feeding received bytes to the parser backend and routing its events, pipelining
(responses in request order), reading small request bodies before their request goes to
admission (``--buffer-request-body``), request-body backpressure (``pause_reading`` above
``BODY_HIGH_WATER_BYTES``), response backpressure (``drain``), the keep-alive,
request-header and request-body timeouts, the one place where a ``ProtocolError``
becomes an error response, and the protocol switch: a WebSocket handshake hands the
transport (and the bytes after the handshake) to a ``WebSocketProtocol`` with
``transport.set_protocol`` and this object is done (``_switch_to_websocket``; another
protocol, such as an HTTP/2 upgrade, would switch beside it). Request cycles see this
object only through ``cycle.CycleHost``.
Must not import ``nea.server``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from nea._http.errors import ProtocolError
from nea._http.parser import END_OF_MESSAGE, RequestHead
from nea._http.response import error_response
from nea._http.scope import apply_proxy_headers, build_scope, websocket_scope
from nea._server.cycle import RequestCycle
from nea._server.state import ServerState, logger

# What the connection's one deadline limits (``HTTPProtocol._deadline_kind``).
_NO_DEADLINE, _IDLE, _HEAD, _BODY = range(4)

_upgrade_warned = False


def _warn_upgrade_once() -> None:
    global _upgrade_warned
    if not _upgrade_warned:
        _upgrade_warned = True
        logger.warning(
            "Upgrade requests nea does not speak (or WebSocket with --ws none) "
            "are served as plain HTTP requests"
        )


def _no_write(data: bytes) -> None:
    pass


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


class HTTPProtocol(asyncio.Protocol):
    """One client connection; created by ``loop.create_server`` for each accept."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.parser = state.make_parser(state.limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        # The transport's bound write, for the cycle's response path (``CycleHost``).
        self.write_now: Callable[[bytes], None] = _no_write
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.cycle: RequestCycle | None = None  # the cycle whose response is being written
        # True while ``cycle`` has not gone to admission yet: its (small) body is being read
        # first, so a client that stalls mid-body holds no slot (``--buffer-request-body``).
        self._buffering = False
        self.receiving: RequestCycle | None = None  # the cycle the parser feeds body to
        self.pipeline: collections.deque[RequestCycle] = collections.deque()
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self.closed = False
        # Stop parsing: a ProtocolError was answered or queued, or the connection is closing.
        self._failed = False
        self._pending_error: ProtocolError | None = None
        # Timeouts are lazy: _deadline (loop time, 0.0 = none) moves with every request, the
        # one TimerHandle only wakes up to compare, so a busy connection schedules no timers.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._deadline_kind = _NO_DEADLINE

    # asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write_now = self.transport.write
        self.client = _address(transport.get_extra_info("peername"))
        sockname = transport.get_extra_info("sockname")
        # ASGI: a Unix socket server is [path, None]
        self.server = (sockname, None) if isinstance(sockname, str) else _address(sockname)
        self.state.connections.add(self)
        if self.state.shutting_down:
            self.close()
            return
        self._set_deadline(self.state.timeout_request_headers, kind=_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        for cycle in (self.cycle, self.receiving, *self.pipeline):
            if cycle is not None:
                cycle.mark_disconnected()
        self.pipeline.clear()
        self._wake_drain()
        self.state.discard_connection(self)

    def eof_received(self) -> bool | None:
        # A half-closed client gets its in-flight responses; the transport closes afterwards.
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return
        if self._deadline_kind == _IDLE:
            # Bytes on an idle keep-alive connection: the idle deadline gives way to the head
            # deadline below. A head deadline is never extended (slow-loris protection).
            self._deadline = 0.0
            self._deadline_kind = _NO_DEADLINE
        for event in self.parser.feed(data):
            if type(event) is bytes:
                receiving = self.receiving
                if receiving is not None:
                    receiving.feed_body(event)
                    if self._buffering and receiving is self.cycle:
                        self._start_if_buffered(receiving)
            elif event is END_OF_MESSAGE:
                receiving = self.receiving
                if receiving is not None:
                    receiving.end_body()
                    self.receiving = None
                    if self._deadline_kind == _BODY:
                        self._deadline = 0.0
                        self._deadline_kind = _NO_DEADLINE
                    if self._buffering and receiving is self.cycle:
                        self._start_if_buffered(receiving)
            elif type(event) is RequestHead:
                self._on_head(event)
            else:
                self._protocol_error(event)  # type: ignore[arg-type]
                return
        receiving = self.receiving
        high_water = self.state.body_high_water
        if receiving is not None:
            if not self._read_paused:
                # Every read of the body moves its inactivity deadline (lazily: no new timer).
                self._set_deadline(self.state.timeout_request_body, kind=_BODY)
        elif self.cycle is None and not self._deadline and self.parser.head_pending:
            self._set_deadline(self.state.timeout_request_headers, kind=_HEAD)
        if (
            self.pipeline
            or self._read_paused
            or (receiving is not None and receiving.buffered_body_bytes > high_water)
        ):
            self._update_reading()

    # request routing ----------------------------------------------------------------------

    def _on_head(self, head: RequestHead) -> None:
        self._deadline = 0.0
        self._deadline_kind = _NO_DEADLINE
        state = self.state
        if head.upgrade:
            if state.ws_enabled and head.is_websocket():
                self._switch_to_websocket(head)
                return
            _warn_upgrade_once()
        client, scheme = self.client, state.scheme
        if head.forwarded and state.proxies is not None:
            client, scheme = apply_proxy_headers(head, client, scheme, state.proxies)
        scope = build_scope(
            head, scheme, client, self.server, state.root_path, state.lifespan_state
        )
        cycle = RequestCycle(self, head, scope)
        self.receiving = cycle
        if self.cycle is None:
            self._begin(cycle)
        else:
            self.pipeline.append(cycle)

    def _switch_to_websocket(self, head: RequestHead) -> None:
        """The protocol switch: hand the transport, and the bytes after the handshake, to a
        ``WebSocketProtocol``; this object is done with the connection. A handshake that
        arrives behind unanswered pipelined requests is refused (400): a client waits for
        the switch before it sends anything else."""
        rest = self.parser.upgrade_rest
        if self.cycle is not None or self.pipeline or rest is None:
            self._protocol_error(ProtocolError(400, "WebSocket handshake behind other requests"))
            return
        from nea._server.websocket import WebSocketProtocol

        state = self.state
        client, scheme = self.client, state.scheme
        if head.forwarded and state.proxies is not None:
            client, scheme = apply_proxy_headers(head, client, scheme, state.proxies)
        http_scope = build_scope(
            head, scheme, client, self.server, state.root_path, state.lifespan_state
        )
        self._failed = True  # parse nothing more: the bytes are WebSocket frames now
        self._cancel_timer()
        self.closed = True  # for HTTP: this object writes nothing more
        ws = WebSocketProtocol(
            state,
            self.loop,
            self.transport,
            websocket_scope(http_scope, ws_extensions=True),
            state.make_ws_engine(
                head.headers, head.target, state.config.ws_max_size, state.ws_deflate
            ),
            rest,
        )
        state.connections.discard(self)
        state.connections.add(ws)
        self.transport.set_protocol(ws)
        ws.start()

    def _begin(self, cycle: RequestCycle) -> None:
        """Make ``cycle`` the one being answered: start it now, or once its body is read."""
        self.cycle = cycle
        head = cycle.head
        limit = self.state.buffer_request_body
        # A body announced larger than the limit, or one behind ``Expect: 100-continue``
        # (the client waits for the app's first ``receive()``), goes to admission at once.
        buffer = not cycle.body_complete and not head.expect_continue and limit > 0
        if buffer:
            length = head.content_length
            buffer = head.chunked if length is None else 0 < length <= limit
        if buffer:
            self._buffering = True
            # A pipelined request may have read enough of its body while it waited.
            self._start_if_buffered(cycle)
        else:
            self._start(cycle)

    def _start_if_buffered(self, cycle: RequestCycle) -> None:
        """Hand a buffering request to admission once its body is whole or the limit reached."""
        if cycle.body_complete or cycle.buffered_body_bytes >= self.state.buffer_request_body:
            self._buffering = False
            self._start(cycle)

    def _start(self, cycle: RequestCycle) -> None:
        state = self.state
        if state.on_request is not None:
            state.on_request()
        task = self.loop.create_task(cycle.run())
        state.tasks.add(task)
        task.add_done_callback(state.task_done)

    def body_consumed(self, cycle: RequestCycle) -> None:
        if self._read_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        receiving = self.receiving
        want_pause = bool(self.pipeline) or (
            receiving is not None and receiving.buffered_body_bytes > self.state.body_high_water
        )
        if want_pause != self._read_paused and not self.closed:
            self._read_paused = want_pause
            if want_pause:
                self.transport.pause_reading()
                if self._deadline_kind == _BODY:
                    # The app is behind, not the client: no body timeout while paused.
                    self._deadline = 0.0
                    self._deadline_kind = _NO_DEADLINE
            else:
                self.transport.resume_reading()
                if receiving is not None:
                    self._set_deadline(self.state.timeout_request_body, kind=_BODY)

    # response side ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.closed or not self.write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = self.loop.create_future()
        await asyncio.shield(waiter)

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def response_complete(self, cycle: RequestCycle) -> None:
        """Called by the cycle when its last body chunk is written."""
        state = self.state
        if state.access_log:
            cycle.log_access(cycle.response.status)
        keep_alive = cycle.response.keep_alive and not state.shutting_down
        if not cycle.body_complete and cycle.head.expect_continue and not cycle.continue_sent:
            # The client may still be waiting to send a body nobody will read.
            keep_alive = False
        if not keep_alive:
            self.close()
            return
        self.cycle = None
        if self.receiving is cycle:
            cycle.discard_body()  # unread body: the rest is discarded as it arrives
            if self._read_paused:
                self._update_reading()
        if self.pipeline:
            self._begin(self.pipeline.popleft())
            self._update_reading()
        elif self._pending_error is not None:
            self._answer_error(self._pending_error)
        elif self.receiving is not None:
            self._set_deadline(state.timeout_request_body, kind=_BODY)
        elif self.parser.head_pending:
            self._set_deadline(state.timeout_request_headers, kind=_HEAD)
        else:
            self._set_deadline(state.timeout_keep_alive, kind=_IDLE)

    # errors and closing -------------------------------------------------------------------

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._failed = True
        logger.debug("Invalid HTTP request from %s: %s", self.client, exc)
        receiving = self.receiving
        if self.cycle is None:
            self._answer_error(exc)
        elif receiving is self.cycle and not self.cycle.response_started:
            # The request being served broke its own body framing: answer it now.
            self.cycle.mark_disconnected()
            self._answer_error(exc)
        elif receiving is not None:
            receiving.mark_disconnected()
            self.close()
        else:
            self._pending_error = exc
            if not self._read_paused and not self.closed:
                self._read_paused = True
                self.transport.pause_reading()

    def _answer_error(self, exc: ProtocolError) -> None:
        self.send_error(exc.status, exc.reason)

    def send_error(self, status: int, reason: str) -> None:
        """Write a complete error response and close the connection."""
        if self.closed:
            return
        state = self.state
        self.write(error_response(status, reason, state.default_headers))
        if state.access_log and self.cycle is not None:
            self.cycle.log_access(status)
        self.close()

    def close(self) -> None:
        """Close after the buffered writes are flushed."""
        self._cancel_timer()
        self._failed = True  # parse nothing more from this connection
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping unsent data (app failure mid-response, forced shutdown)."""
        self._cancel_timer()
        self._failed = True
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful stop: close now when idle, else after the current response."""
        if self.cycle is None:
            self.close()

    # timers -------------------------------------------------------------------------------

    def _set_deadline(self, seconds: float, *, kind: int) -> None:
        deadline = self._deadline = self.loop.time() + seconds
        self._deadline_kind = kind
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it wakes up first and re-arms for the rest
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timeout)

    def _cancel_timer(self) -> None:
        self._deadline = 0.0
        self._deadline_kind = _NO_DEADLINE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        deadline = self._deadline
        kind = self._deadline_kind
        if not deadline or (self.cycle is not None and kind != _BODY):
            return
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._on_timeout)
            return
        self._deadline = 0.0
        self._deadline_kind = _NO_DEADLINE
        if kind == _BODY:
            self._body_timed_out()
        elif self.parser.head_pending:
            self._failed = True
            self.send_error(408, "Request Timeout")
        else:
            self.close()  # idle keep-alive connection

    def _body_timed_out(self) -> None:
        """No body bytes for ``--timeout-request-body`` seconds: 408, or a plain close when
        the response has started (the app sees ``http.disconnect`` either way)."""
        receiving = self.receiving
        if receiving is None:
            return
        logger.debug("Request body from %s timed out", self.client)
        self._failed = True
        receiving.mark_disconnected()
        cycle = self.cycle
        if cycle is None or (cycle is receiving and not cycle.response_started):
            self.send_error(408, "Request Timeout")
        else:
            self.close()
