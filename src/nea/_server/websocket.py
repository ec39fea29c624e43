"""The asyncio ``Protocol`` of one WebSocket connection, over a sans-IO frame engine.

Owns: the ASGI ``websocket`` protocol (spec 2.4) for a connection that ``HTTPProtocol``
switched over after a handshake request: ``websocket.connect``/``receive``/``disconnect``
in, ``accept``/``send``/``close`` and the denial response (``websocket.http.response.*``)
out; message size (``--ws-max-size``, 1009), the receive queue (``--ws-max-queue``, reading
pauses when it is full), keepalive pings (``--ws-ping-interval``/``--ws-ping-timeout``),
permessage-deflate, and what happens when the app fails (500 before accept, 1011 after).
The frames themselves are the engine's (``nea._http.ws_engines``: wsproto or websockets).
The app runs through the server's ``WebSocketAdmission`` (the WebSocket pool).
Must not import ``nea.server``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, NoReturn

from nea._http.ws_engines import CLOSE, MESSAGE, PONG, EngineError, WebSocketEngine
from nea._server.state import ServerState, access_logger, logger
from nea._types import Message as ASGIMessage

# RFC 6455 §7.4.1 close codes.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_ABNORMAL = 1006  # never sent: what the app sees when the TCP connection just ends
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_CONNECT: ASGIMessage = {"type": "websocket.connect"}
# Handshake states.
_CONNECTING, _ACCEPTED, _DENYING, _CLOSED = range(4)


class ClientDisconnected(OSError):
    """``send`` on a WebSocket whose connection is closed (ASGI spec 2.4: an ``IOError``)."""


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection, from the handshake request to the close."""

    def __init__(
        self,
        state: ServerState,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        scope: dict[str, Any],
        engine: WebSocketEngine,
        rest: bytes,
    ) -> None:
        self.state = state
        self.loop = loop
        self.transport = transport
        self.scope = scope
        config = state.config
        self.max_size = config.ws_max_size
        self.max_queue = config.ws_max_queue
        self.engine = engine
        self._pending = rest  # frames that arrived with the handshake, parsed after accept
        self._handshake = _CONNECTING
        self._connect_sent = False
        self._queue: collections.deque[ASGIMessage] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[str | bytes] = []
        self._fragment_bytes = 0
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False  # the TCP connection is closed (or closing)
        self._close_sent = False
        self._close_code = CLOSE_ABNORMAL
        self._close_reason = ""
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Read the handshake and start the app (called once, right after the switch)."""
        problem = self.engine.handshake_error()
        if problem is not None:
            self._reject_bad_handshake(problem)
            return
        state = self.state
        if state.on_request is not None:
            state.on_request()
        task = self.loop.create_task(self.run())
        state.tasks.add(task)
        task.add_done_callback(state.task_done)

    def _reject_bad_handshake(self, problem: str) -> None:
        logger.debug("Invalid WebSocket handshake: %s", problem)
        body = f"Bad Request: {problem}".encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.close_transport()

    # asyncio callbacks --------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_pings()
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self.state.discard_connection(self)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._handshake == _CONNECTING:
            self._pending += data  # a client sending frames before the 101 (rare)
            return
        engine = self.engine
        try:
            events = engine.receive(data)
        except EngineError as exc:
            logger.debug("WebSocket closed by the server: %s", exc)
            if exc.close_sent:
                self._close_sent = True
                self._write_bytes(engine.output())
            self._fail(exc.code, exc.reason)
            return
        out = engine.output()
        if out:
            self._write_bytes(out)
        for event in events:
            kind = event[0]
            if kind == MESSAGE:
                self._on_message(event[1], event[2], event[3])
            elif kind == PONG:
                self._on_pong()
            elif kind == CLOSE:
                self._close_sent = True  # the engine answered it
                self._disconnected(event[1], event[2])
                self.close_transport()

    def _on_message(self, data: str | bytes, finished: bool, is_text: bool) -> None:
        if self.closed or self._close_sent:
            return
        self._fragment_bytes += len(data)
        if self._fragment_bytes > self.max_size:
            self._fail(CLOSE_TOO_BIG, "message too big")
            return
        if not finished:
            self._fragments.append(data)
            return
        fragments = self._fragments
        if fragments:
            fragments.append(data)
            data = "".join(fragments) if type(data) is str else b"".join(fragments)  # type: ignore[arg-type]
            self._fragments = []
        self._fragment_bytes = 0
        if is_text:
            if type(data) is not str:
                try:
                    data = data.decode("utf-8")  # type: ignore[union-attr]
                except UnicodeDecodeError:
                    self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                    return
            message: ASGIMessage = {"type": "websocket.receive", "text": data}
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}  # type: ignore[arg-type]
        self._queue.append(message)
        self._wake()
        if len(self._queue) >= self.max_queue and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def _disconnected(self, code: int, reason: str) -> None:
        if not self.closed or self._close_code == CLOSE_ABNORMAL:
            self._close_code = code
            self._close_reason = reason
        self._cancel_pings()
        self.closed = True
        self._wake()

    def _fail(self, code: int, reason: str) -> None:
        """Close the connection from the server's side (too big, protocol error, no pong)."""
        if not self._close_sent and self._handshake == _ACCEPTED:
            self._close_sent = True
            self._write_bytes(self.engine.close(code, reason))
        self._disconnected(code, reason)
        self.close_transport()

    # keepalive pings ----------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self.state.config.ws_ping_interval
        if interval and not self.closed:
            self._ping_timer = self.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        if self.closed or self._close_sent:
            return
        self._write_bytes(self.engine.ping(b"nea"))
        timeout = self.state.config.ws_ping_timeout
        if timeout:
            self._pong_timer = self.loop.call_later(
                timeout, self._fail, CLOSE_INTERNAL_ERROR, "keepalive ping timeout"
            )
        else:
            self._schedule_ping()

    def _on_pong(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._schedule_ping()

    def _cancel_pings(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

    # the app side -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the app through the WebSocket pool; answer what it left unanswered."""
        state = self.state
        try:
            await state.ws_admission.admit(state.app, self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self.abort()
                raise
            logger.error("Exception in ASGI application", exc_info=exc)
            self._after_app(error=True)
            if not isinstance(exc, Exception):
                raise
        else:
            self._after_app(error=False)

    def _after_app(self, *, error: bool) -> None:
        if self._handshake == _CONNECTING:
            if not error and not self.closed:
                logger.error("ASGI callable returned without accepting or closing the WebSocket")
            self._reject(500, [], b"")
        elif self._handshake == _ACCEPTED:
            code = CLOSE_INTERNAL_ERROR if error else CLOSE_NORMAL
            if not self._close_sent and not self.closed:
                self._close_sent = True
                self._write_bytes(self.engine.close(code, ""))
            self.close_transport()
        elif self._handshake == _DENYING:
            self.close_transport()  # an unfinished denial response: cut it off

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> ASGIMessage:
        if not self._connect_sent:
            self._connect_sent = True
            return _CONNECT
        queue = self._queue
        while not queue and not self.closed:
            waiter = self._waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if queue:
            message = queue.popleft()
            if self._read_paused and len(queue) < self.max_queue and not self.closed:
                self._read_paused = False
                self.transport.resume_reading()
            return message
        return {
            "type": "websocket.disconnect",
            "code": self._close_code,
            "reason": self._close_reason,
        }

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if self._handshake == _CONNECTING:
            self._send_handshake(kind, message)
        elif self._handshake == _ACCEPTED:
            if self.closed or self._close_sent:
                raise ClientDisconnected("the WebSocket is closed")
            if kind == "websocket.send":
                self._send_data(message)
                if self._write_paused:
                    await self._drain()
            elif kind == "websocket.close":
                self._close_sent = True
                code = message.get("code") or CLOSE_NORMAL
                self._write_bytes(self.engine.close(code, message.get("reason") or ""))
                self._disconnected(code, message.get("reason") or "")
                self.close_transport()
            else:
                self._protocol_error(
                    f"expected 'websocket.send' or 'websocket.close', got {kind!r}"
                )
        elif self._handshake == _DENYING:
            if kind != "websocket.http.response.body":
                self._protocol_error(f"expected 'websocket.http.response.body', got {kind!r}")
            more = bool(message.get("more_body", False))
            self._write_bytes(self.engine.reject_body(message.get("body", b""), not more))
            if not more:
                self._handshake = _CLOSED
                self.close_transport()
        else:
            raise ClientDisconnected("the WebSocket is closed")

    def _send_handshake(self, kind: str, message: ASGIMessage) -> None:
        if self.closed:
            raise ClientDisconnected("the client left before the handshake was answered")
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._reject(403, [], b"")  # ASGI: a close before accept is an HTTP 403
        elif kind == "websocket.http.response.start":
            status = message.get("status")
            if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
                self._protocol_error(f"expected an int 'status', got {status!r}")
            self._log_handshake(str(status))
            headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
            self._handshake = _DENYING
            self._write_bytes(self.engine.reject(status, headers, True))
        else:
            self._protocol_error(
                f"expected 'websocket.accept', 'websocket.close' or "
                f"'websocket.http.response.start', got {kind!r}"
            )

    def _accept(self, message: ASGIMessage) -> None:
        headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers") or ()]
        self._handshake = _ACCEPTED
        self._write_bytes(self.engine.accept(message.get("subprotocol"), headers))
        self._log_handshake("[accepted]")
        self._schedule_ping()
        pending, self._pending = self._pending, b""
        if pending:
            self.data_received(pending)

    def _reject(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._handshake = _CLOSED
        if self.closed:
            return
        self._log_handshake(str(status))
        self._write_bytes(self.engine.reject(status, headers, False))
        self.close_transport()

    def _log_handshake(self, outcome: str) -> None:
        """uvicorn's access line for a handshake: ``... - "WebSocket /path" [accepted]``
        (or the denial's status)."""
        if self.state.access_log:
            client = self.scope.get("client")
            access_logger.info(
                '%s - "WebSocket %s" %s',
                f"{client[0]}:{client[1]}" if client else "-",
                self.scope.get("path", ""),
                outcome,
            )

    def _send_data(self, message: ASGIMessage) -> None:
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
            if data is None:
                self._protocol_error("expected 'bytes' or 'text' in 'websocket.send'")
        self._write_bytes(self.engine.send(data))

    def _protocol_error(self, problem: str) -> NoReturn:
        logger.error("ASGI protocol error in WebSocket %r: %s", self.scope.get("path"), problem)
        raise RuntimeError(problem)

    async def _drain(self) -> None:
        if self.closed or not self._write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = self.loop.create_future()
        await asyncio.shield(waiter)

    # writing and closing ------------------------------------------------------------------

    def _write_bytes(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def close_transport(self) -> None:
        self._cancel_pings()
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._cancel_pings()
        self.closed = True
        self.transport.abort()

    def shutdown(self) -> None:
        """Graceful stop: the client is told the server is going away (1001)."""
        if self._handshake == _ACCEPTED and not self._close_sent and not self.closed:
            self._close_sent = True
            self._write_bytes(self.engine.close(CLOSE_GOING_AWAY, ""))
            self._disconnected(CLOSE_GOING_AWAY, "")
        self.close_transport()
