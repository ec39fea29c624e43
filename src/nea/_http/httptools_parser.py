"""Parser backend on httptools (llhttp, C).

Owns: collecting httptools' callbacks into nea's parser events, and mapping llhttp's errors
to the statuses the h11 backend gives for the same input. Imported only through
``nea._http.backends`` so that httptools stays optional. Must not import asyncio, socket or
anyio.

llhttp reports no byte offsets, so the checks that need the raw request line (a double
space in it; whether a method llhttp cannot parse is a token, i.e. 501, or garbage, 400)
see it only when the request starts a read, as it does unless requests are pipelined in
one packet; a pipelined request gets llhttp's own answer there (200 or 400).
"""

from __future__ import annotations

import re

import httptools

from nea._http.errors import ProtocolError
from nea._http.parser import END_OF_MESSAGE, TOKEN, ParserBase, ParserLimits, make_head

# A request line is method SP target SP version (RFC 9112 §3); llhttp accepts runs of spaces.
_REQUEST_LINE = re.compile(rb"(" + TOKEN.pattern + rb") [^ \r\n]+ HTTP/[0-9]\.[0-9]\r\n")
_DOUBLE_SPACE = b"  "
# Longest request line without its target that a head limit check still counts as "only
# the request line has arrived": method (M-SEARCH, MKACTIVITY...), two spaces, version, CRLF.
_REQUEST_LINE_OVERHEAD_BYTES = 32


def _new_parser(callbacks: HttptoolsParser) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(callbacks)
    # HTTP/1.2 and later HTTP/1 minor versions reach make_head, which serves them as 1.1
    # (RFC 9110 §2.5) and answers other versions 505, as with h11. (httptools >= 0.6.2.)
    if hasattr(parser, "set_dangerous_leniencies"):
        parser.set_dangerous_leniencies(lenient_version=True)
    return parser


class HttptoolsParser(ParserBase):
    """``feed(bytes) -> events`` on top of ``httptools.HttpRequestParser``."""

    __slots__ = (
        "_began",
        "_completed_in_feed",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_parser",
        "_url",
        "_websocket",
    )

    def __init__(self, limits: ParserLimits) -> None:
        super().__init__(limits)
        self._parser = _new_parser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = True
        self._began = False
        self._head_bytes = 0
        self._completed_in_feed = False
        self._websocket = False  # the last head was a WebSocket handshake

    @property
    def head_pending(self) -> bool:
        return self._began

    def _feed(self, data: bytes) -> None:
        starts_request = self._in_head and not self._began
        self._completed_in_feed = False
        if starts_request:
            _check_request_line(data)
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops at an upgrade request; nea serves it as plain HTTP, so parsing
            # continues with a fresh parser from where llhttp stopped.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            if self._websocket and self.limits.stop_at_websocket:
                self._websocket = False
                self.upgrade_rest = data[offset:]
                return
            self._parser = _new_parser(self)
            self._in_head = True
            self._began = False
            self._head_bytes = 0
            if offset < len(data):
                self._feed(data[offset:])
        except httptools.HttpParserError as exc:
            # The failing request began this read only if no request ended in it.
            began_here = starts_request and not self._completed_in_feed
            raise _protocol_error(exc, data if began_here else None) from None
        limit = self.limits.max_header_bytes
        if self._in_head and self._head_bytes > limit:
            if not self._headers and (
                self._head_bytes - len(self._url) <= _REQUEST_LINE_OVERHEAD_BYTES
            ):
                raise ProtocolError(414, f"request line longer than the {limit}-byte head limit")
            raise ProtocolError(431, f"request head larger than the {limit}-byte limit")

    # httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._began = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._in_head = False
        self._began = False
        self._body_bytes = 0
        head = make_head(
            parser.get_method().decode("ascii"),
            self._url,
            parser.get_http_version(),
            self._headers,
            self.limits,
        )
        if head.upgrade:
            self._websocket = head.is_websocket()
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        if self.limits.max_body_bytes is None:
            self._events.append(body)
        else:
            self._emit_body(body)

    def on_message_complete(self) -> None:
        self._completed_in_feed = True
        self._events.append(END_OF_MESSAGE)
        self._in_head = True
        self._head_bytes = 0


def _check_request_line(data: bytes) -> None:
    """400 for a double space in the request line that starts ``data`` (h11 rejects it)."""
    start = len(data) - len(data.lstrip(b"\r\n")) if data and data[0] in (13, 10) else 0
    end = data.find(10, start)  # an int: "bytes in bytes" takes the slower buffer path
    if end != -1 and data.find(_DOUBLE_SPACE, start, end) != -1:
        raise ProtocolError(400, "request line parts separated by more than one space")


def _protocol_error(exc: BaseException, request_start: bytes | None) -> ProtocolError:
    """nea's error for llhttp's; ``request_start`` is the read the request began with."""
    # An exception raised inside a callback (make_head, body limit) is chained by httptools.
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ProtocolError):
        return cause
    if isinstance(exc, httptools.HttpParserInvalidMethodError) and request_start is not None:
        line = _REQUEST_LINE.match(request_start.lstrip(b"\r\n"))
        if line is not None:  # a well-formed request line with a method llhttp lacks
            return ProtocolError(501, f"method {line[1][:40]!r} is not implemented")
    if "PRI/Upgrade" in str(exc):  # llhttp stops at the HTTP/2 connection preface
        return ProtocolError(505, "expected HTTP/1.1 or HTTP/1.0, got the HTTP/2 preface")
    return ProtocolError(400, f"malformed request: {exc}")
