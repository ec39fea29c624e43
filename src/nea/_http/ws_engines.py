"""WebSocket frame engines: ``--ws wsproto`` and ``--ws websockets``, both sans-IO.

Owns: one small interface (``WebSocketEngine``) over wsproto's ``WSConnection`` and
websockets' ``ServerProtocol``, so that one asyncio driver (``nea._server.websocket``)
serves both: bytes in → events out (message fragments, pongs, the peer's close), and
handshake answers, messages, pings and closes in → bytes out. Each engine answers pings
and echoes the peer's close itself. The engines live in ``ws_wsproto`` and
``ws_websockets``, imported lazily by ``engine_factory`` (both packages are optional).
Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

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
    ``websockets`` (the value of ``nea._http.backends.websocket_backend``); the package is
    imported here, once."""
    if backend == "websockets":
        from nea._http.ws_websockets import WebsocketsEngine

        return WebsocketsEngine
    from nea._http.ws_wsproto import WsprotoEngine

    return WsprotoEngine
