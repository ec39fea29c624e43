"""Parser backend on h11 (pure Python, always available).

Owns: turning h11's events into nea's parser events, and the checks that make h11 answer
like llhttp (the httptools backend). h11 is used only as a request-head and
content-length-body parser: a fresh ``h11.Connection`` per request (fed the previous one's
trailing bytes), so h11's server half — which nea replaces with its own response writer —
never gets in the way of pipelining. Chunked bodies are decoded by nea's ``ChunkedDecoder``
(h11 accepts any chunk size and waits forever on bare-LF chunk lines). Where h11 is more
lenient than llhttp about a head (bare LF line ends, obsolete line folding, repeated or
listed content-length, DEL in a value), ``check_raw_head`` rejects it; where h11 is
stricter (empty lines before the request line, transfer-encoding lists), this module
relaxes it. Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import re
from typing import Final

import h11

from nea._http.chunked import ChunkedDecoder
from nea._http.errors import ProtocolError
from nea._http.parser import (
    END_OF_MESSAGE,
    ParserBase,
    ParserLimits,
    RequestHead,
    check_transfer_coding,
    head_too_large,
    make_head,
)

_CONTENT_LENGTH_LIST: Final = re.compile(rb"\ncontent-length:[^\n]*,")


class H11Parser(ParserBase):
    """``feed(bytes) -> events`` on top of h11."""

    __slots__ = ("_chunks", "_conn", "_head_parts", "_websocket")

    def __init__(self, limits: ParserLimits) -> None:
        super().__init__(limits)
        self._conn = self._new_connection()
        # Every read fed while h11 waits for a request head (the head and what follows it
        # in the same reads): the raw text the checks below need, which h11 does not keep.
        # A list, joined once: a head trickling in byte by byte costs no quadratic copying.
        self._head_parts: list[bytes] = []
        self._chunks: ChunkedDecoder | None = None
        self._websocket = False  # the last head was a WebSocket handshake to stop after

    def _new_connection(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)

    @property
    def head_pending(self) -> bool:
        return self._chunks is None and bool(self._head_parts)

    def _feed(self, data: bytes) -> None:
        while data:
            if self._chunks is not None:
                data = self._feed_chunks(self._chunks, data)
            else:
                data = self._feed_h11(data)

    def _feed_chunks(self, decoder: ChunkedDecoder, data: bytes) -> bytes:
        """Decode chunked body bytes; return what follows the body (b"" until it ends)."""
        pieces, rest = decoder.feed(data)
        for piece in pieces:
            self._emit_body(piece)
        if rest is None:
            return b""
        self._chunks = None
        self._events.append(END_OF_MESSAGE)
        return rest

    def _feed_h11(self, data: bytes) -> bytes:
        """Feed h11; return bytes it must not parse itself: a chunked body and what follows
        it, or the next request after a content-length body (for a fresh connection)."""
        conn = self._conn
        if conn.their_state is h11.IDLE:
            if not self._head_parts:
                # RFC 9112 §2.2: empty lines before a request line are ignored (llhttp does).
                data = data.lstrip(b"\r\n")
                if not data:
                    return b""
            self._head_parts.append(data)
        conn.receive_data(data)
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Data):
                    self._emit_body(bytes(event.data))
                elif isinstance(event, h11.Request):
                    head = self._on_request(event)
                    if head.chunked:
                        self._chunks = ChunkedDecoder(self.limits.max_header_bytes)
                        rest = bytes(conn.trailing_data[0])
                        self._conn = self._new_connection()
                        return rest
                elif isinstance(event, h11.EndOfMessage):
                    self._events.append(END_OF_MESSAGE)
                    rest = bytes(conn.trailing_data[0])
                    if self._websocket:
                        self._websocket = False
                        self.upgrade_rest = rest
                        return b""
                    self._conn = self._new_connection()
                    return rest
                else:  # NEED_DATA, PAUSED or ConnectionClosed
                    return b""
        except h11.RemoteProtocolError as exc:
            return self._h11_error(exc)

    def _on_request(self, request: h11.Request) -> RequestHead:
        raw = b"".join(self._head_parts)  # one read: the same object, no copy
        self._head_parts = []
        check_raw_head(raw)
        head = make_head(
            request.method.decode("ascii"),
            request.target,
            request.http_version.decode("ascii"),
            list(request.headers),
            self.limits,
        )
        if head.upgrade:
            self._websocket = self.limits.stop_at_websocket and head.is_websocket()
        self._emit_head(head)
        return head

    def _h11_error(self, exc: h11.RemoteProtocolError) -> bytes:
        """Map h11's error to nea's; a transfer-encoding h11 refuses but RFC 9112 allows
        (``,chunked``) restarts parsing with the header normalised, returning the bytes."""
        raw = b"".join(self._head_parts)
        status = exc.error_status_hint
        if status == 431:
            raise head_too_large(raw, self.limits.max_header_bytes) from None
        if status == 501:  # h11 refuses every transfer-encoding but exactly "chunked"
            rewritten = _normalise_transfer_encoding(raw)
            if rewritten is not None:
                self._head_parts = []
                self._conn = self._new_connection()
                return rewritten
        raise ProtocolError(status, str(exc)) from None


def check_raw_head(raw: bytes) -> None:
    """Reject what llhttp rejects in a head and h11 accepts (RFC 9112 lets a server choose
    either way): lines ending in a bare LF (§2.2), obsolete line folding (§5.2), a
    repeated or comma-listed content-length (RFC 9110 §8.6), and DEL in a field value (not
    a field-vchar, RFC 9110 §5.5). ``raw`` starts with the
    request line and holds at least the whole head."""
    end = raw.find(b"\r\n\r\n")
    head = raw[:end] if end != -1 else raw
    if end == -1 or head.count(b"\n") != head.count(b"\r\n"):
        raise ProtocolError(400, "request head line not ended by CRLF (bare LF)")
    if b"\n " in head or b"\n\t" in head:
        raise ProtocolError(400, "obsolete line folding in the request head")
    if 0x7F in head:  # the one control character h11 lets through (RFC 9110 §5.5)
        raise ProtocolError(400, "DEL character in the request head")
    lowered = head.lower()
    if b"\ncontent-length:" in lowered and (
        lowered.count(b"\ncontent-length:") > 1 or _CONTENT_LENGTH_LIST.search(lowered)
    ):
        raise ProtocolError(400, "more than one content-length")


def _normalise_transfer_encoding(raw: bytes) -> bytes | None:
    """``raw`` with its transfer-encoding lines replaced by one ``chunked`` line when the
    shared rule accepts them (``None`` when the head is not complete CRLF text); raises
    the shared rule's ``ProtocolError`` otherwise."""
    end = raw.find(b"\r\n\r\n")
    if end == -1:
        return None
    lines = raw[:end].split(b"\r\n")
    values: list[bytes] = []
    kept = [lines[0]]
    has_length = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"transfer-encoding":
            values.append(value)
        else:
            has_length = has_length or name == b"content-length"
            kept.append(line)
    if not values:
        return None
    if has_length:
        raise ProtocolError(400, "both content-length and transfer-encoding given")
    check_transfer_coding(values)
    kept.append(b"transfer-encoding: chunked")
    return b"\r\n".join(kept) + raw[end:]
