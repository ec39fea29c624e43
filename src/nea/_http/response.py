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
        self._expected_length: int | None = None
        self._sent_length = 0
        self._chunked = False
        self._no_body = False
        self._app_said_close = False

    def head_and_body(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: bytes,
        data: bytes,
        more_body: bool,
    ) -> bytes:
        """Bytes for the first ``http.response.body`` message: the whole head, then the body.

        The head waits for the first body message so that both leave in one write.
        ``default_headers`` are the lines every response carries (``server``, ``date``,
        ``--header``), each terminated by CRLF.
        """
        self.status = status
        parts = [_STATUS_LINES.get(status) or status_line(status), default_headers]
        try:
            for name, value in headers:
                if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                    raise ResponseError(f"response header {name!r} contains a line break")
                kind = _FRAMING_HEADERS.get(name.lower())
                if kind is not None:
                    self._framing_header(kind, value)
                parts += (name, b": ", value, b"\r\n")
        except (TypeError, ValueError, AttributeError) as exc:
            raise ResponseError(
                f"response headers must be (bytes, bytes) pairs, got {headers!r}: {exc}"
            ) from None
        no_body = self._no_body = (
            self.is_head_request or status in _BODYLESS_STATUSES or status < 200
        )
        self._add_framing(parts, no_body, len(data), more_body)
        if not (no_body or self._chunked) and not more_body and self._expected_length == len(data):
            self._sent_length = len(data)
            parts.append(data)  # the common case: the whole body, exactly as declared
        else:
            parts.append(self.frame(data, more_body))
        return b"".join(parts)

    def _add_framing(self, parts: list[bytes], no_body: bool, size: int, more_body: bool) -> None:
        """Append the framing and connection headers and the blank line that ends the head."""
        if self._chunked:
            if self._expected_length is not None:
                raise ResponseError("response has both content-length and transfer-encoding")
        elif self._expected_length is None and not no_body:
            if not more_body:
                # The whole body in one message and no length from the app: declare it, which
                # also keeps HTTP/1.0 keep-alive connections usable.
                self._expected_length = size
                parts.append(b"content-length: %d\r\n" % size)
            elif self.http10:
                self.keep_alive = False  # a close-delimited body
            else:
                self._chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive and not self._app_said_close:
            parts.append(b"connection: close\r\n")
        elif self.http10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")

    def _framing_header(self, kind: int, value: bytes) -> None:
        if kind == _CONTENT_LENGTH:
            self._expected_length = _response_length(value)
        elif kind == _TRANSFER_ENCODING:
            self._chunked = True
        elif value.lower() == b"close":
            self.keep_alive = False
            self._app_said_close = True  # the app's own header line says it: no second one

    def frame(self, data: bytes, more_body: bool) -> bytes:
        """Bytes for a later ``http.response.body`` message."""
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
