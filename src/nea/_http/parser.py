"""Parser events, limits and the checks every parser backend shares.

Owns: the three events a backend emits (``RequestHead``, body ``bytes``, ``END_OF_MESSAGE``),
``ParserLimits``, ``ParserBase`` (event list, body-size accounting) and ``make_head`` — the
one place where a request head is validated, so that h11 and httptools answer bad input with
the same status. Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from nea._http.errors import ProtocolError

# RFC 9112 leaves the number of header lines open; 100 is the limit Apache, gunicorn and
# Python's http.client use (http.client._MAXHEADERS).
MAX_HEADER_LINES: Final = 100
SUPPORTED_VERSIONS: Final = ("1.1", "1.0")

_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _UPGRADE, _FORWARDED = range(7)
# Headers make_head acts on; every other header is passed through untouched.
_SPECIAL_HEADERS: Final = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
    b"x-forwarded-for": _FORWARDED,
    b"x-forwarded-proto": _FORWARDED,
}


class EndOfMessage:
    """The request body is complete (a singleton: compare with ``is END_OF_MESSAGE``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


END_OF_MESSAGE: Final = EndOfMessage()


@dataclass(frozen=True)
class ParserLimits:
    """Limits applied while parsing; see ``Config`` for the option each comes from."""

    max_header_bytes: int
    max_body_bytes: int | None = None


@dataclass(slots=True)
class RequestHead:
    """A parsed, validated request line and header section.

    ``headers`` has lowercase names, in arrival order. ``content_length`` is ``None`` when
    the body is chunked or absent.
    """

    method: str
    target: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expect_continue: bool
    upgrade: bool
    content_length: int | None
    chunked: bool
    forwarded: bool = False  # has X-Forwarded-For or X-Forwarded-Proto


# The event stream of one connection: a head, zero or more body chunks, END_OF_MESSAGE, repeat;
# a ProtocolError ends the stream (events before it are still delivered, in order).
Event = RequestHead | bytes | EndOfMessage | ProtocolError


class ParserBase:
    """State shared by the backends: the pending event list and body-size accounting."""

    __slots__ = ("_body_bytes", "_events", "limits")

    def __init__(self, limits: ParserLimits) -> None:
        self.limits = limits
        self._events: list[Event] = []
        self._body_bytes = 0

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; return the events it completes.

        Bad input ends the list with a ``ProtocolError`` (after the events of the requests
        that preceded it); the connection must not be fed again after that.
        """
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._events.append(exc)
        events = self._events
        self._events = []
        return events

    def _feed(self, data: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def head_pending(self) -> bool:  # pragma: no cover - overridden
        """True when part of a request head has arrived but not all of it."""
        raise NotImplementedError

    def _emit_head(self, head: RequestHead) -> None:
        self._body_bytes = 0
        self._events.append(head)

    def _emit_body(self, data: bytes) -> None:
        limit = self.limits.max_body_bytes
        if limit is not None:
            self._body_bytes += len(data)
            if self._body_bytes > limit:
                raise ProtocolError(413, f"request body larger than the {limit}-byte limit")
        self._events.append(data)


def make_head(
    method: str,
    target: bytes,
    http_version: str,
    headers: list[tuple[bytes, bytes]],
    limits: ParserLimits,
) -> RequestHead:
    """Validate a request head and derive its framing and connection flags.

    Raises ``ProtocolError`` with 400, 413, 431, 501 or 505. Both backends call this, so
    both reject the same heads with the same status.
    """
    if http_version not in SUPPORTED_VERSIONS:
        raise ProtocolError(505, f"expected HTTP/1.1 or HTTP/1.0, got HTTP/{http_version}")
    if len(headers) > MAX_HEADER_LINES:
        raise ProtocolError(431, f"more than {MAX_HEADER_LINES} header lines")
    # Request line plus "name: value\r\n" per header: what the client actually sent.
    head_bytes = len(method) + len(target) + 12 + 4 * len(headers)
    special: list[tuple[int, bytes]] = []
    for name, value in headers:
        head_bytes += len(name) + len(value)
        kind = _SPECIAL_HEADERS.get(name)
        if kind is not None:
            special.append((kind, value))
    if head_bytes > limits.max_header_bytes:
        raise ProtocolError(
            431, f"request head larger than the {limits.max_header_bytes}-byte limit"
        )
    return _derive_head(method, target, http_version, headers, special, limits)


def _derive_head(
    method: str,
    target: bytes,
    http_version: str,
    headers: list[tuple[bytes, bytes]],
    special: list[tuple[int, bytes]],
    limits: ParserLimits,
) -> RequestHead:
    http11 = http_version == "1.1"
    content_length: int | None = None
    chunked = upgrade = expect_continue = has_host = forwarded = False
    connection_tokens: list[bytes] = []
    for kind, value in special:
        if kind == _HOST:
            has_host = True
        elif kind == _CONTENT_LENGTH:
            if content_length is not None:
                raise ProtocolError(400, "more than one content-length header")
            content_length = _parse_content_length(value)
        elif kind == _TRANSFER_ENCODING:
            if value.strip().lower() != b"chunked" or chunked:
                raise ProtocolError(
                    501, f"only transfer-encoding chunked is supported, got {value!r}"
                )
            chunked = True
        elif kind == _CONNECTION:
            connection_tokens.extend(t.strip().lower() for t in value.split(b","))
        elif kind == _EXPECT:
            expect_continue = http11 and value.strip().lower() == b"100-continue"
        elif kind == _UPGRADE:
            upgrade = True
        else:
            forwarded = True
    if chunked and content_length is not None:
        raise ProtocolError(400, "both content-length and transfer-encoding given")
    if http11 and not has_host:
        raise ProtocolError(400, "HTTP/1.1 request without a host header")
    max_body = limits.max_body_bytes
    if content_length is not None and max_body is not None and content_length > max_body:
        raise ProtocolError(
            413, f"content-length {content_length} exceeds the {max_body}-byte limit"
        )
    keep_alive = b"close" not in connection_tokens if http11 else b"keep-alive" in connection_tokens
    return RequestHead(
        method,
        target,
        http_version,
        headers,
        keep_alive,
        expect_continue and content_length != 0,
        upgrade and b"upgrade" in connection_tokens,
        content_length,
        chunked,
        forwarded,
    )


def _parse_content_length(value: bytes) -> int:
    value = value.strip()
    # RFC 9110 §8.6: 1*DIGIT only; int() alone would accept "+5", "5_0" and " 5".
    if not value.isdigit() or len(value) > 18:
        raise ProtocolError(400, f"content-length must be a decimal number, got {value!r}")
    return int(value)
