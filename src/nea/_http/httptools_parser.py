"""Parser backend on httptools (llhttp, C).

Owns: collecting httptools' callbacks into nea's parser events. Imported only through
``nea._http.backends`` so that httptools stays optional. Must not import asyncio, socket or
anyio.
"""

from __future__ import annotations

import httptools

from nea._http.errors import ProtocolError
from nea._http.parser import END_OF_MESSAGE, ParserBase, ParserLimits, make_head


class HttptoolsParser(ParserBase):
    """``feed(bytes) -> events`` on top of ``httptools.HttpRequestParser``."""

    __slots__ = ("_began", "_head_bytes", "_headers", "_in_head", "_parser", "_url")

    def __init__(self, limits: ParserLimits) -> None:
        super().__init__(limits)
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = True
        self._began = False
        self._head_bytes = 0

    @property
    def head_pending(self) -> bool:
        return self._began

    def _feed(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops at an upgrade request; nea serves it as plain HTTP, so parsing
            # continues with a fresh parser from where llhttp stopped.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._parser = httptools.HttpRequestParser(self)
            self._in_head = True
            self._began = False
            self._head_bytes = 0
            if offset < len(data):
                self._feed(data[offset:])
        except httptools.HttpParserError as exc:
            raise _protocol_error(exc) from None
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            raise ProtocolError(
                431, f"request head larger than the {self.limits.max_header_bytes}-byte limit"
            )

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
        self._events.append(
            make_head(
                parser.get_method().decode("ascii"),
                self._url,
                parser.get_http_version(),
                self._headers,
                self.limits,
            )
        )

    def on_body(self, body: bytes) -> None:
        if self.limits.max_body_bytes is None:
            self._events.append(body)
        else:
            self._emit_body(body)

    def on_message_complete(self) -> None:
        self._events.append(END_OF_MESSAGE)
        self._in_head = True
        self._head_bytes = 0


def _protocol_error(exc: BaseException) -> ProtocolError:
    # An exception raised inside a callback (make_head, body limit) is chained by httptools.
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ProtocolError):
        return cause
    return ProtocolError(400, f"malformed request: {exc}")
