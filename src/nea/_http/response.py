"""Response serialisation: ASGI response messages in, HTTP/1.1 bytes out.

Owns: the status line, default ``server``/``date`` headers, framing (content-length,
chunked, or close-delimited for HTTP/1.0), the content-length check in both directions,
HEAD and 204/304 without a body, and the canned error responses the driver sends for a
``ProtocolError``. One ``Response`` per request, whichever parser backend parsed it.
Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import http
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Final

from nea._http.errors import ResponseError

CONTINUE_RESPONSE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_STATUS_LINES: dict[int, bytes] = {}
_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION = 1, 2, 3
_FRAMING_HEADERS: Final = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}
# Statuses that never carry a body (RFC 9110 §6.4.1); HEAD responses are handled separately.
_BODYLESS_STATUSES: Final = frozenset({204, 304})


def status_line(status: int) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, cached per status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")
    return line


class DateHeader:
    """The ``date: ...\\r\\n`` line, formatted at most once per second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self._line


def default_header_block(server_header: bool, extra: Iterable[tuple[str, str]]) -> bytes:
    """The constant header lines every response starts with (``server`` and ``--header``)."""
    lines = [b"server: nea\r\n"] if server_header else []
    lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in extra)
    return b"".join(lines)


class Response:
    """Serialises one response; raises ``ResponseError`` when the app breaks HTTP framing.

    ``keep_alive`` starts as the request's wish and may only become False (the app sent
    ``connection: close``, the framing needs a close, or the server is shutting down).
    """

    __slots__ = (
        "_app_said_close",
        "_chunked",
        "_expected_length",
        "_head",
        "_no_body",
        "_sent_length",
        "http10",
        "is_head_request",
        "keep_alive",
        "status",
    )

    def __init__(self, is_head_request: bool, http10: bool, keep_alive: bool) -> None:
        self.is_head_request = is_head_request
        self.http10 = http10
        self.keep_alive = keep_alive
        self.status = 0
        self._head: list[bytes] = []
        self._expected_length: int | None = None
        self._sent_length = 0
        self._chunked = False
        self._no_body = False
        self._app_said_close = False

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], default_headers: bytes
    ) -> None:
        """Record the status and headers; the head is written with the first body chunk.

        ``default_headers`` are the lines every response carries (``server``, ``date``,
        ``--header``), already terminated by CRLF.
        """
        self.status = status
        if type(headers) is not list:
            headers = list(headers)
        for name, value in headers:
            kind = _FRAMING_HEADERS.get(name.lower())
            if kind is not None:
                self._framing_header(kind, value)
        head = [status_line(status), default_headers]
        count = len(headers)
        if count:
            try:
                block = b"\r\n".join([b": ".join(pair) for pair in headers])
            except TypeError:
                raise ResponseError(
                    f"response headers must be (bytes, bytes) pairs, got {headers!r}"
                ) from None
            # count - 1 separators; any other line break would inject headers.
            if block.count(b"\n") >= count or block.count(b"\r") >= count:
                raise ResponseError("a response header contains a line break")
            head.append(block)
            head.append(b"\r\n")
        self._no_body = self.is_head_request or status in _BODYLESS_STATUSES or status < 200
        if self._chunked and self._expected_length is not None:
            raise ResponseError("response has both content-length and transfer-encoding")
        self._head = head

    def _framing_header(self, kind: int, value: bytes) -> None:
        if kind == _CONTENT_LENGTH:
            self._expected_length = _response_length(value)
        elif kind == _TRANSFER_ENCODING:
            self._chunked = True
        elif value.lower() == b"close":
            self.keep_alive = False
            self._app_said_close = True  # the app's own header line says it: no second one

    def body(self, data: bytes, more_body: bool, *, first: bool) -> bytes:
        """Bytes to write for one ``http.response.body`` message (head included if ``first``)."""
        if first:
            return self._first_body(data, more_body)
        return self._frame(data, more_body)

    def _first_body(self, data: bytes, more_body: bool) -> bytes:
        head = self._head
        if not more_body and self._expected_length is None and not self._no_body:
            if not self._chunked:
                # Fast path: the whole body in one message, no framing header from the app.
                self._expected_length = len(data)
                head.append(b"content-length: %d\r\n" % len(data))
                if not self.keep_alive and not self._app_said_close:
                    head.append(b"connection: close\r\n")
                elif self.http10:
                    head.append(b"connection: keep-alive\r\n")
                head.append(b"\r\n")
                head.append(data)
                self._sent_length = len(data)
                return b"".join(head)
        if not self._no_body and self._expected_length is None and not self._chunked:
            if not more_body:
                # The whole body is known: a content-length keeps HTTP/1.0 connections alive.
                self._expected_length = len(data)
                head.append(b"content-length: %d\r\n" % len(data))
            elif self.http10:
                self.keep_alive = False  # close-delimited body
            else:
                self._chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive and not self._app_said_close:
            head.append(b"connection: close\r\n")
        elif self.http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        head.append(self._frame(data, more_body))
        return b"".join(head)

    def _frame(self, data: bytes, more_body: bool) -> bytes:
        if self._no_body:
            return b""
        if self._chunked:
            if not data:
                return b"" if more_body else _LAST_CHUNK
            chunk = b"".join((b"%x\r\n" % len(data), data, b"\r\n"))
            return chunk if more_body else chunk + _LAST_CHUNK
        expected = self._expected_length
        if expected is not None:
            self._sent_length += len(data)
            if self._sent_length > expected:
                raise ResponseError(
                    f"response body longer than its content-length: declared {expected} "
                    f"bytes, the app sent at least {self._sent_length}"
                )
            if not more_body and self._sent_length < expected:
                raise ResponseError(
                    f"response body shorter than its content-length: declared {expected} "
                    f"bytes, the app sent {self._sent_length}"
                )
        return data


def _response_length(value: bytes) -> int:
    value = value.strip()
    if not value.isdigit():
        raise ResponseError(f"response content-length must be a decimal number, got {value!r}")
    return int(value)


def error_response(status: int, reason: str, default_headers: bytes) -> bytes:
    """A complete ``text/plain`` error response that closes the connection."""
    body = reason.encode("ascii")
    return b"".join(
        (
            status_line(status),
            default_headers,
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        )
    )
