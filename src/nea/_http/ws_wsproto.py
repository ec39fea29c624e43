"""The wsproto frame engine (``--ws wsproto``): ``WSConnection`` behind ``WebSocketEngine``.

Owns: mapping wsproto's events to nea's engine events; nea checks ``--ws-max-size``
itself (wsproto has no limit). Imported only by ``nea._http.ws_engines.engine_factory``.
Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from nea._http.ws_engines import CLOSE, MESSAGE, PONG, EngineError, EngineEvent


class WsprotoEngine:
    """wsproto's ``WSConnection``; nea checks ``max_size`` (wsproto has no limit)."""

    def __init__(
        self, headers: list[tuple[bytes, bytes]], target: bytes, max_size: int, deflate: bool
    ) -> None:
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
        extensions: list[Extension] = [PerMessageDeflate()] if self._deflate else []
        return self._conn.send(
            AcceptConnection(subprotocol=subprotocol, extensions=extensions, extra_headers=headers)
        )

    def reject(self, status: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> bytes:
        return self._conn.send(
            RejectConnection(status_code=status, headers=headers, has_body=has_body)
        )

    def reject_body(self, data: bytes, finished: bool) -> bytes:
        return self._conn.send(RejectData(data=data, body_finished=finished))

    def receive(self, data: bytes) -> list[EngineEvent]:
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
        if isinstance(data, str):
            return self._conn.send(TextMessage(data=data))
        return self._conn.send(BytesMessage(data=data))

    def close(self, code: int, reason: str) -> bytes:
        try:
            return self._conn.send(CloseConnection(code=code, reason=reason or None))
        except LocalProtocolError:
            return b""  # already closing

    def ping(self, payload: bytes) -> bytes:
        return self._conn.send(Ping(payload=payload))
