"""The websockets frame engine (``--ws websockets``): its sans-IO ``ServerProtocol``
(websockets 13 or later) behind ``WebSocketEngine``.

Owns: feeding websockets the handshake nea already parsed, the app's choice of
subprotocol, the denial response (written by nea: websockets only rejects with text), and
mapping frames to nea's engine events. websockets enforces ``--ws-max-size`` (1009) and
fails bad frames itself. Imported only by ``nea._http.ws_engines.engine_factory``.
Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import http
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from nea._http.ws_engines import CLOSE, CLOSE_NO_STATUS, MESSAGE, PONG, EngineError, EngineEvent


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


class WebsocketsEngine:
    """websockets' sans-IO ``ServerProtocol`` (websockets ≥ 13); it enforces
    ``max_size`` itself (1009) and validates text as UTF-8 (1007)."""

    def __init__(
        self, headers: list[tuple[bytes, bytes]], target: bytes, max_size: int, deflate: bool
    ) -> None:
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
        self._text = False  # the message being received is text (for its CONT frames)

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
        try:
            self._proto.send_close(code, reason)
        except InvalidState:
            return b""
        return self.output()

    def ping(self, payload: bytes) -> bytes:
        self._proto.send_ping(payload)
        return self.output()


def _no_subprotocol(protocol: Any, subprotocols: Any) -> None:
    return None
