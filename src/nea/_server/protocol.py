"""The asyncio ``Protocol`` of one HTTP/1.1 connection.

Owns: feeding received bytes to the parser backend and routing its events, pipelining
(responses in request order), request-body backpressure (``pause_reading`` above
``BODY_HIGH_WATER_BYTES``), response backpressure (``drain``), keep-alive and request-header
timeouts, and the one place where a ``ProtocolError`` becomes an error response.
Must not import ``nea.server``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from nea._http.errors import ProtocolError
from nea._http.parser import END_OF_MESSAGE, RequestHead
from nea._http.response import error_response
from nea._http.scope import apply_proxy_headers, build_scope
from nea._server.cycle import RequestCycle
from nea._server.state import BODY_HIGH_WATER_BYTES, ServerState, log_access, logger

_upgrade_warned = False


def _warn_upgrade_once() -> None:
    global _upgrade_warned
    if not _upgrade_warned:
        _upgrade_warned = True
        logger.warning(
            "Upgrade requests (e.g. WebSocket) are not supported yet; "
            "they are served as plain HTTP requests"
        )


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
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.cycle: RequestCycle | None = None  # the cycle whose response is being written
        self.receiving: RequestCycle | None = None  # the cycle the parser feeds body to
        self.pipeline: collections.deque[RequestCycle] = collections.deque()
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self.closed = False
        self._failed = False  # a ProtocolError was answered or is queued behind the pipeline
        self._pending_error: ProtocolError | None = None
        self._timer: asyncio.TimerHandle | None = None

    # asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client = _address(transport.get_extra_info("peername"))
        sockname = transport.get_extra_info("sockname")
        # ASGI: a Unix socket server is [path, None]
        self.server = (sockname, None) if isinstance(sockname, str) else _address(sockname)
        self.state.connections.add(self)
        if self.state.shutting_down:
            self.close()
            return
        self._arm_timer(self.state.timeout_request_headers)

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
        timer = self._timer
        if timer is not None and self.cycle is None:
            timer.cancel()
            self._timer = None
        for event in self.parser.feed(data):
            if type(event) is bytes:
                if self.receiving is not None:
                    self.receiving.feed_body(event)
            elif event is END_OF_MESSAGE:
                if self.receiving is not None:
                    self.receiving.end_body()
                    self.receiving = None
            elif type(event) is RequestHead:
                self._on_head(event)
            else:
                self._protocol_error(event)  # type: ignore[arg-type]
                return
        if self.cycle is None and self._timer is None and self.parser.head_pending:
            self._arm_timer(self.state.timeout_request_headers)
        receiving = self.receiving
        if (
            self.pipeline
            or self._read_paused
            or (receiving is not None and receiving.buffered_body_bytes > BODY_HIGH_WATER_BYTES)
        ):
            self._update_reading()

    # request routing ----------------------------------------------------------------------

    def _on_head(self, head: RequestHead) -> None:
        if self._timer is not None:
            self._cancel_timer()
        state = self.state
        if head.upgrade:
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
            self._start(cycle)
        else:
            self.pipeline.append(cycle)

    def _start(self, cycle: RequestCycle) -> None:
        self.cycle = cycle
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
            receiving is not None and receiving.buffered_body_bytes > BODY_HIGH_WATER_BYTES
        )
        if want_pause != self._read_paused and not self.closed:
            self._read_paused = want_pause
            if want_pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

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
            head = cycle.head
            log_access(
                cycle.scope["client"],
                head.method,
                head.target,
                head.http_version,
                cycle.response.status,
                time.perf_counter() - cycle.started_at,
                cycle.peak(),
            )
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
            self._start(self.pipeline.popleft())
            self._update_reading()
        elif self._pending_error is not None:
            self._answer_error(self._pending_error)
        elif self.parser.head_pending:
            self._arm_timer(state.timeout_request_headers)
        else:
            self._timer = self.loop.call_later(state.timeout_keep_alive, self._on_timeout)

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
            head = self.cycle.head
            log_access(
                self.cycle.scope["client"],
                head.method,
                head.target,
                head.http_version,
                status,
                time.perf_counter() - self.cycle.started_at,
                self.cycle.peak(),
            )
        self.close()

    def close(self) -> None:
        """Close after the buffered writes are flushed."""
        self._cancel_timer()
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping unsent data (app failure mid-response, forced shutdown)."""
        self._cancel_timer()
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful stop: close now when idle, else after the current response."""
        if self.cycle is None:
            self.close()

    # timers -------------------------------------------------------------------------------

    def _arm_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.cycle is not None:
            return
        if self.parser.head_pending:
            self._failed = True
            self.send_error(408, "Request Timeout")
        else:
            self.close()  # idle keep-alive connection
