"""Parser events, limits and the checks every parser backend shares.

Owns: the three events a backend emits (``RequestHead``, body ``bytes``, ``END_OF_MESSAGE``),
``ParserLimits``, ``ParserBase`` (event list, body-size accounting) and ``make_head`` — the
one place where a request head is validated, so that h11 and httptools answer bad input with
the same status. Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from nea._http.errors import ProtocolError

# RFC 9112 leaves the number of header lines open; 100 is the limit Apache, gunicorn and
# Python's http.client use (http.client._MAXHEADERS).
MAX_HEADER_LINES: Final = 100
SUPPORTED_VERSIONS: Final = ("1.1", "1.0")
# The methods llhttp (the httptools backend) can parse: RFC 9110 §9's, WebDAV's (RFC 4918,
# 3253, 3744, 5323, 5842, 4791), PATCH (RFC 5789), PURGE, LINK/UNLINK, SOURCE and QUERY.
# Any other method gets 501 (RFC 9110 §9.1) from both backends.
KNOWN_METHODS: Final = frozenset(
    [
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "CONNECT",
        "OPTIONS",
        "TRACE",
        "PATCH",
        "COPY",
        "LOCK",
        "MKCOL",
        "MOVE",
        "PROPFIND",
        "PROPPATCH",
        "SEARCH",
        "UNLOCK",
        "BIND",
        "REBIND",
        "UNBIND",
        "ACL",
        "REPORT",
        "MKACTIVITY",
        "CHECKOUT",
        "MERGE",
        "M-SEARCH",
        "NOTIFY",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "PURGE",
        "MKCALENDAR",
        "LINK",
        "UNLINK",
        "SOURCE",
        "QUERY",
    ]
)
# RFC 9110 §5.6.2 token, for telling an unknown method (501) from garbage (400).
TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# absolute-form's "scheme://" (RFC 9112 §3.2.2, RFC 3986 §3.1).
_ABSOLUTE_FORM: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://")

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
    # Stop parsing after a WebSocket handshake request (the server switches protocols and
    # takes the bytes that follow it from ``ParserBase.upgrade_rest``).
    stop_at_websocket: bool = False


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

    def is_websocket(self) -> bool:
        """Is this a WebSocket opening handshake (RFC 6455 §4.2.1): GET, ``connection:
        upgrade``, ``upgrade: websocket`` and no body? Asked only of ``upgrade`` heads, so
        plain requests pay nothing for it."""
        if not self.upgrade or self.method != "GET" or self.chunked or self.content_length:
            return False
        for name, value in self.headers:
            if name == b"upgrade":
                return b"websocket" in [t.strip() for t in value.lower().split(b",")]
        return False


# The event stream of one connection: a head, zero or more body chunks, END_OF_MESSAGE, repeat;
# a ProtocolError ends the stream (events before it are still delivered, in order).
Event = RequestHead | bytes | EndOfMessage | ProtocolError


class ParserBase:
    """State shared by the backends: the pending event list and body-size accounting.

    With ``limits.stop_at_websocket``, parsing stops at the end of a WebSocket handshake
    request: ``upgrade_rest`` then holds the bytes that followed it (the first frames) and
    the parser must not be fed again: the connection speaks WebSocket from there on."""

    __slots__ = ("_body_bytes", "_events", "limits", "upgrade_rest")

    def __init__(self, limits: ParserLimits) -> None:
        self.limits = limits
        self._events: list[Event] = []
        self._body_bytes = 0
        self.upgrade_rest: bytes | None = None

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

    Raises ``ProtocolError`` with 400, 413, 414, 431, 501 or 505. Both backends call this,
    so both reject the same heads with the same status. A ``#fragment`` is cut from the
    target (clients must not send one, RFC 9112 §3.2) and ``HTTP/1.x`` with ``x > 1`` is
    served as HTTP/1.1 (RFC 9110 §2.5).
    """
    if http_version not in SUPPORTED_VERSIONS:
        http_version = _served_version(http_version)
    if method not in KNOWN_METHODS:
        raise ProtocolError(501, f"method {method[:40]!r} is not implemented")
    if len(method) + len(target) + 11 > limits.max_header_bytes:
        raise ProtocolError(
            414, f"request line longer than the {limits.max_header_bytes}-byte head limit"
        )
    # Int operands: ``bytes in bytes`` goes through the buffer protocol, 8× slower here.
    if not target or target[0] != 0x2F:  # "/"
        _check_target_form(method, target)
    if 0x23 in target:  # "#"
        target = target[: target.index(0x23)]
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
    transfer_encoding: list[bytes] = []
    connection_tokens: list[bytes] = []
    for kind, value in special:
        if kind == _HOST:
            if has_host:  # RFC 9112 §3.2: more than one host is a 400
                raise ProtocolError(400, "more than one host header")
            has_host = True
        elif kind == _CONTENT_LENGTH:
            if content_length is not None:
                raise ProtocolError(400, "more than one content-length header")
            content_length = _parse_content_length(value)
        elif kind == _TRANSFER_ENCODING:
            transfer_encoding.append(value)
        elif kind == _CONNECTION:
            connection_tokens.extend(t.strip().lower() for t in value.split(b","))
        elif kind == _EXPECT:
            expect_continue = http11 and value.strip().lower() == b"100-continue"
        elif kind == _UPGRADE:
            upgrade = True
        else:
            forwarded = True
    if transfer_encoding:
        if content_length is not None:
            raise ProtocolError(400, "both content-length and transfer-encoding given")
        chunked = check_transfer_coding(transfer_encoding)
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


def check_transfer_coding(values: list[bytes]) -> bool:
    """Check the ``transfer-encoding`` header values of a request; return True (chunked).

    Empty list elements are ignored (RFC 9110 §5.6.1), except after the final ``chunked``.
    ``chunked`` must be the last coding and appear once, else 400 (RFC 9112 §6.3, §7); any
    other coding is not implemented: 501 (RFC 9112 §6.1).
    """
    codings = [c for c in (c.strip().lower() for v in values for c in v.split(b",")) if c]
    # ``chunked,`` too: llhttp refuses an empty element after chunked, and both backends
    # must answer alike.
    ends_in_comma = values[-1].rstrip().endswith(b",")
    if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1 or ends_in_comma:
        raise ProtocolError(
            400, f"transfer-encoding must end with one chunked, got {b', '.join(values)!r}"
        )
    if len(codings) > 1:
        raise ProtocolError(501, f"only transfer-encoding chunked is supported, got {codings!r}")
    return True


def head_too_large(head_so_far: bytes, limit: int) -> ProtocolError:
    """The error for a request head that outgrew ``limit`` while it arrived: 414 while the
    request line is still incomplete or alone too long (RFC 9110 §15.5.15), else 431."""
    newline = head_so_far.lstrip(b"\r\n").find(b"\n")
    if newline == -1 or newline > limit:
        return ProtocolError(414, f"request line longer than the {limit}-byte head limit")
    return ProtocolError(431, f"request head larger than the {limit}-byte limit")


def _served_version(version: str) -> str:
    major, dot, minor = version.partition(".")
    if major == "1" and dot and minor.isdigit():
        return "1.1"  # a later HTTP/1 minor version is served as the highest we implement
    raise ProtocolError(505, f"expected HTTP/1.1 or HTTP/1.0, got HTTP/{version}")


def _check_target_form(method: str, target: bytes) -> None:
    """Non-origin-form targets (RFC 9112 §3.2): absolute-form for any method, authority-form
    only with CONNECT, asterisk-form only with OPTIONS; anything else is a 400."""
    if method == "CONNECT" or (target == b"*" and method == "OPTIONS"):
        return
    if _ABSOLUTE_FORM.match(target) is None:
        raise ProtocolError(400, f"request target {target[:40]!r} is not valid for {method}")
