"""Parser backend on h11 (pure Python, always available).

Owns: turning h11's events into nea's parser events. h11 is used only as a request parser: a
fresh ``h11.Connection`` per request (fed the previous one's trailing bytes), so h11's server
half — which nea replaces with its own response writer — never gets in the way of
pipelining. Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import h11

from nea._http.errors import ProtocolError
from nea._http.parser import END_OF_MESSAGE, ParserBase, ParserLimits, make_head


class H11Parser(ParserBase):
    """``feed(bytes) -> events`` on top of h11."""

    __slots__ = ("_conn",)

    def __init__(self, limits: ParserLimits) -> None:
        super().__init__(limits)
        self._conn = self._new_connection()

    def _new_connection(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)

    def _feed(self, data: bytes) -> None:
        conn = self._conn
        conn.receive_data(data)
        try:
            while True:
                event = conn.next_event()
                kind = type(event)
                if kind is h11.Data:
                    self._emit_body(bytes(event.data))  # type: ignore[union-attr]
                elif kind is h11.Request:
                    self._emit_head(self._head(event))  # type: ignore[arg-type]
                elif kind is h11.EndOfMessage:
                    self._events.append(END_OF_MESSAGE)
                    trailing, _closed = conn.trailing_data
                    conn = self._conn = self._new_connection()
                    if trailing:
                        conn.receive_data(bytes(trailing))
                else:  # NEED_DATA, PAUSED or ConnectionClosed
                    break
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(exc.error_status_hint, str(exc)) from None

    @property
    def head_pending(self) -> bool:
        conn = self._conn
        return conn.their_state is h11.IDLE and bool(conn.trailing_data[0])

    def _head(self, request: h11.Request) -> object:
        return make_head(
            request.method.decode("ascii"),
            request.target,
            request.http_version.decode("ascii"),
            list(request.headers),
            self.limits,
        )
