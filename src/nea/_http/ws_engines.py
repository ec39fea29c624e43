"""WebSocket frame engines: ``--ws wsproto`` and ``--ws websockets``, both sans-IO.

Owns: one small interface (``WebSocketEngine``) over wsproto's ``WSConnection`` and
websockets' ``ServerProtocol``, so that one asyncio driver (``nea._server.websocket``)
serves both: bytes in → events out (message fragments, pongs, the peer's close), and
handshake answers, messages, pings and closes in → bytes out. Each engine answers pings
and echoes the peer's close itself. Both are imported lazily (``engine_factory``).
Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any, Final, Protocol

# Event kinds returned by ``WebSocketEngine.receive``:
#   (MESSAGE, data: str | bytes, finished: bool, is_text: bool)  — one fragment;
#   (PONG,)                                                       — a pong arrived;
#   (CLOSE, code: int, reason: str)                               — the peer closed.
MESSAGE: Final = 0
PONG: Final = 1
CLOSE: Final = 2
# RFC 6455 §7.4.1: no status code in the close frame.
CLOSE_NO_STATUS: Final = 1005

EngineEvent = tuple[Any, ...]


class EngineError(Exception):
    """The peer broke the protocol (or sent a message too big): close with ``code``.
    ``close_sent``: the engine already queued its close frame (in ``output()``)."""

    def __init__(self, code: int, reason: str, *, close_sent: bool) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.close_sent = close_sent


class WebSocketEngine(Protocol):
    def handshake_error(self) -> str | None:
        """Why the opening handshake is invalid (answered 400), or None."""

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> bytes: ...

    def reject(self, status: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> bytes:
        """The denial response's head (or whole response when ``has_body`` is False)."""

    def reject_body(self, data: bytes, finished: bool) -> bytes: ...

    def receive(self, data: bytes) -> list[EngineEvent]:
        """Parse ``data``; raises ``EngineError`` when the peer broke the protocol."""

    def output(self) -> bytes:
        """Bytes the engine queued while receiving (pongs, the close reply)."""

    def send(self, data: str | bytes) -> bytes: ...

    def close(self, code: int, reason: str) -> bytes: ...

    def ping(self, payload: bytes) -> bytes: ...


EngineFactory = Callable[[list[tuple[bytes, bytes]], bytes, int, bool], WebSocketEngine]


def engine_factory(backend: str) -> EngineFactory:
    """``factory(headers, target, max_size, per_message_deflate)`` for ``wsproto`` or
    ``websockets`` (the value of ``nea._http.backends.websocket_backend``)."""
    if backend == "websockets":
        return WebsocketsEngine
    return WsprotoEngine


def _response_bytes(status: int, headers: list[tuple[bytes, bytes]], body: bytes | None) -> bytes:
    """An HTTP/1.1 response that closes the connection; ``body`` None: the head only,
    for a body that follows until the close."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {status} {phrase}".encode("latin-1")]
    lines += [name + b": " + value for name, value in headers if name != b"connection"]
    lines.append(b"connection: close")
    if body is not None and not any(name == b"content-length" for name, _ in headers):
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class WsprotoEngine:
    """wsproto's ``WSConnection``; nea checks ``max_size`` (wsproto has no limit)."""

    def __init__(
        self, headers: list[tuple[bytes, bytes]], target: bytes, max_size: int, deflate: bool
    ) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.utilities import RemoteProtocolError

        self._conn = WSConnection(ConnectionType.SERVER)
        self._deflate = deflate
        self._out = b""
        self._error: str | None = None
        try:
            self._conn.initiate_upgrade_connection(headers, target)
            list(self._conn.events())  # the Request event: the scope already says it all
        except RemoteProtocolError as exc:
            self._error = str(exc)

    def handshake_error(self) -> str | None:
        return self._error

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> bytes:
        from wsproto.events import AcceptConnection
        from wsproto.extensions import Extension, PerMessageDeflate

        extensions: list[Extension] = [PerMessageDeflate()] if self._deflate else []
        return self._conn.send(
            AcceptConnection(subprotocol=subprotocol, extensions=extensions, extra_headers=headers)
        )

    def reject(self, status: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> bytes:
        from wsproto.events import RejectConnection

        return self._conn.send(
            RejectConnection(status_code=status, headers=headers, has_body=has_body)
        )

    def reject_body(self, data: bytes, finished: bool) -> bytes:
        from wsproto.events import RejectData

        return self._conn.send(RejectData(data=data, body_finished=finished))

    def receive(self, data: bytes) -> list[EngineEvent]:
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage
        from wsproto.utilities import RemoteProtocolError

        conn = self._conn
        conn.receive_data(data)
        events: list[EngineEvent] = []
        try:
            for event in conn.events():
                if isinstance(event, Message):
                    is_text = isinstance(event, TextMessage)
                    events.append((MESSAGE, event.data, event.message_finished, is_text))
                elif isinstance(event, Ping):
                    self._out += conn.send(event.response())
                elif isinstance(event, Pong):
                    events.append((PONG,))
                elif isinstance(event, CloseConnection):
                    if conn.state is ConnectionState.REMOTE_CLOSING:
                        self._out += conn.send(event.response())
                    events.append((CLOSE, event.code, event.reason or ""))
        except RemoteProtocolError as exc:
            raise EngineError(1002, str(exc)[:100], close_sent=False) from None
        return events

    def output(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def send(self, data: str | bytes) -> bytes:
        from wsproto.events import BytesMessage, TextMessage

        if isinstance(data, str):
            return self._conn.send(TextMessage(data=data))
        return self._conn.send(BytesMessage(data=data))

    def close(self, code: int, reason: str) -> bytes:
        from wsproto.events import CloseConnection
        from wsproto.utilities import LocalProtocolError

        try:
            return self._conn.send(CloseConnection(code=code, reason=reason or None))
        except LocalProtocolError:
            return b""  # already closing

    def ping(self, payload: bytes) -> bytes:
        from wsproto.events import Ping

        return self._conn.send(Ping(payload=payload))


class WebsocketsEngine:
    """websockets' sans-IO ``ServerProtocol`` (websockets ≥ 13); it enforces
    ``max_size`` itself (1009) and validates text as UTF-8 (1007)."""

    def __init__(
        self, headers: list[tuple[bytes, bytes]], target: bytes, max_size: int, deflate: bool
    ) -> None:
        from websockets.datastructures import Headers
        from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
        from websockets.http11 import Request
        from websockets.server import ServerProtocol

        extensions = [ServerPerMessageDeflateFactory()] if deflate else []
        self._proto = proto = ServerProtocol(
            extensions=extensions,
            select_subprotocol=_no_subprotocol,  # the app chooses, at accept
            max_size=max_size,
        )
        # nea parsed the request already; its bytes are fed again (public API only) so the
        # protocol's parser moves on to frames.
        lines = [b"GET " + target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in headers]
        proto.receive_data(b"\r\n".join(lines) + b"\r\n\r\n")
        request = next((e for e in proto.events_received() if isinstance(e, Request)), None)
        if request is None:
            request = Request(target.decode("latin-1"), Headers())
        self._response = proto.accept(request)
        self._error: str | None = None
        if self._response.status_code != 101:
            self._error = str(proto.handshake_exc or "invalid handshake")
        self._denial: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._denial_body = b""

    def handshake_error(self) -> str | None:
        return self._error

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> bytes:
        proto, response = self._proto, self._response
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            proto.subprotocol = subprotocol  # type: ignore[assignment]
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        proto.send_response(response)
        return self.output()

    def reject(self, status: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> bytes:
        if has_body:
            # Sent whole with its length once the app's last body message arrives.
            self._denial = (status, headers)
            return b""
        return _response_bytes(status, headers, b"")

    def reject_body(self, data: bytes, finished: bool) -> bytes:
        self._denial_body += data
        if not finished or self._denial is None:
            return b""
        status, headers = self._denial
        return _response_bytes(status, headers, self._denial_body)

    def receive(self, data: bytes) -> list[EngineEvent]:
        from websockets.frames import Frame, Opcode

        proto = self._proto
        proto.receive_data(data)
        events: list[EngineEvent] = []
        for frame in proto.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._text = opcode is Opcode.TEXT
                events.append((MESSAGE, bytes(frame.data), frame.fin, self._text))
            elif opcode is Opcode.CONT:
                events.append((MESSAGE, bytes(frame.data), frame.fin, self._text))
            elif opcode is Opcode.PONG:
                events.append((PONG,))
            elif opcode is Opcode.CLOSE:
                received = proto.close_rcvd
                code = CLOSE_NO_STATUS if received is None else int(received.code)
                events.append((CLOSE, code, "" if received is None else received.reason))
        if not events and proto.close_sent is not None and proto.close_rcvd is None:
            # The protocol failed the connection itself (too big, bad frame, bad UTF-8).
            sent = proto.close_sent
            raise EngineError(int(sent.code), sent.reason, close_sent=True)
        return events

    def output(self) -> bytes:
        return b"".join(self._proto.data_to_send())  # b"" items mark EOF: nea closes anyway

    def send(self, data: str | bytes) -> bytes:
        if isinstance(data, str):
            self._proto.send_text(data.encode())
        else:
            self._proto.send_binary(data)
        return self.output()

    def close(self, code: int, reason: str) -> bytes:
        from websockets.exceptions import InvalidState

        try:
            self._proto.send_close(code, reason)
        except InvalidState:
            return b""
        return self.output()

    def ping(self, payload: bytes) -> bytes:
        self._proto.send_ping(payload)
        return self.output()

    _text = False


def _no_subprotocol(protocol: Any, subprotocols: Any) -> None:
    return None
