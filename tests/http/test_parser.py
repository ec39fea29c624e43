"""The parser backends, fed raw bytes: both must emit the same events and errors."""

from __future__ import annotations

import pytest

from nea._http.backends import parser_factory, resolve_backend
from nea._http.errors import ProtocolError
from nea._http.parser import (
    END_OF_MESSAGE,
    KNOWN_METHODS,
    Event,
    ParserBase,
    ParserLimits,
    RequestHead,
)

LIMITS = ParserLimits(max_header_bytes=64 * 1024)


def make(backend: str, limits: ParserLimits = LIMITS) -> ParserBase:
    return parser_factory(backend)(limits)


def feed_all(parser: ParserBase, data: bytes, step: int | None = None) -> list[Event]:
    if step is None:
        return parser.feed(data)
    events: list[Event] = []
    for i in range(0, len(data), step):
        events.extend(parser.feed(data[i : i + step]))
    return events


def heads(events: list[Event]) -> list[RequestHead]:
    return [e for e in events if isinstance(e, RequestHead)]


def body(events: list[Event]) -> bytes:
    return b"".join(e for e in events if isinstance(e, bytes))


def status_of(backend: str, data: bytes, limits: ParserLimits = LIMITS) -> int:
    error = make(backend, limits).feed(data)[-1]
    assert isinstance(error, ProtocolError)
    return error.status


def test_simple_get(backend: str) -> None:
    events = make(backend).feed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing: Yes\r\n\r\n")
    assert len(events) == 2 and events[1] is END_OF_MESSAGE
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.method == "GET"
    assert head.target == b"/a?b=1"
    assert head.http_version == "1.1"
    assert head.headers == [(b"host", b"x"), (b"x-thing", b"Yes")]
    assert head.keep_alive and not head.expect_continue and not head.upgrade


@pytest.mark.parametrize("step", [None, 1, 7])
def test_content_length_body_in_pieces(backend: str, step: int | None) -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
    events = feed_all(make(backend), data, step)
    assert heads(events)[0].content_length == 11
    assert body(events) == b"hello world"
    assert events[-1] is END_OF_MESSAGE


@pytest.mark.parametrize("step", [None, 3])
def test_chunked_body(backend: str, step: int | None) -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    events = feed_all(make(backend), data, step)
    assert heads(events)[0].chunked
    assert body(events) == b"hello world"
    assert events[-1] is END_OF_MESSAGE


def test_pipelined_requests_come_out_in_order(backend: str) -> None:
    data = (
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    events = make(backend).feed(data)
    assert [h.target for h in heads(events)] == [b"/1", b"/2", b"/3"]
    assert events.count(END_OF_MESSAGE) == 3
    assert body(events) == b"ok"


def test_http10_defaults_to_close_and_honours_keep_alive(backend: str) -> None:
    closing = heads(make(backend).feed(b"GET / HTTP/1.0\r\n\r\n"))[0]
    assert closing.http_version == "1.0" and not closing.keep_alive
    kept = heads(make(backend).feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))[0]
    assert kept.keep_alive


def test_connection_close_and_expect_and_upgrade_flags(backend: str) -> None:
    head = heads(
        make(backend).feed(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
    )[0]
    assert not head.keep_alive and head.expect_continue
    events = make(backend).feed(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [h.upgrade for h in heads(events)] == [True, False]
    assert heads(events)[1].target == b"/next"


def test_head_split_across_feeds_is_pending_until_complete(backend: str) -> None:
    parser = make(backend)
    assert not parser.head_pending
    assert parser.feed(b"GET / HTTP/1.1\r\nHo") == []
    assert parser.head_pending
    assert len(parser.feed(b"st: x\r\n\r\n")) == 2
    assert not parser.head_pending


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 requires host
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", 400),
    ],
)
def test_bad_requests_carry_their_status(backend: str, data: bytes, status: int) -> None:
    assert status_of(backend, data) == status


def test_header_lines_over_100_is_431(backend: str) -> None:
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    assert status_of(backend, b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n") == 431
    ok = b"".join(b"X-%d: v\r\n" % i for i in range(99))
    assert heads(make(backend).feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + ok + b"\r\n"))


def test_header_section_over_limit_is_431_complete_or_not(backend: str) -> None:
    limits = ParserLimits(max_header_bytes=1024)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000
    assert status_of(backend, big + b"\r\n\r\n", limits) == 431
    assert status_of(backend, big, limits) == 431  # still incomplete


def test_body_over_limit_is_413_by_length_or_by_chunks(backend: str) -> None:
    limits = ParserLimits(max_header_bytes=1024, max_body_bytes=4)
    declared = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    assert status_of(backend, declared, limits) == 413
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    parser = make(backend, limits)
    assert body(parser.feed(chunked)) == b"abc"
    error = parser.feed(b"3\r\ndef\r\n0\r\n\r\n")[-1]
    assert isinstance(error, ProtocolError) and error.status == 413


def test_unsupported_transfer_encoding_is_501(backend: str) -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    assert status_of(backend, data) in (400, 501)


def test_requests_before_an_error_are_still_delivered(backend: str) -> None:
    events = make(backend).feed(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
    assert [type(e).__name__ for e in events] == ["RequestHead", "EndOfMessage", "ProtocolError"]


def test_auto_prefers_httptools() -> None:
    assert resolve_backend("auto") == "httptools"
    assert resolve_backend("h11") == "h11"


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS - {"CONNECT"}))
def test_every_known_method_parses_on_both_backends(backend: str, method: str) -> None:
    # KNOWN_METHODS is llhttp's list: h11 must not accept less, httptools parses no more.
    events = make(backend).feed(method.encode() + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(events[0], RequestHead) and events[0].method == method


@pytest.mark.parametrize("step", [None, 1, 5])
def test_chunked_body_in_pieces_then_a_pipelined_request(backend: str, step: int | None) -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: t\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    events = feed_all(make(backend), data, step)
    assert [h.target for h in heads(events)] == [b"/", b"/next"]
    assert body(events) == b"hello!"
    assert [e for e in events if e is END_OF_MESSAGE] == [END_OF_MESSAGE] * 2


HANDSHAKE = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 7])
def test_stops_after_a_websocket_handshake(backend: str, step: int | None) -> None:
    parser = make(backend, ParserLimits(64 * 1024, stop_at_websocket=True))
    frames = b"\x81\x85\x01\x02\x03\x04" + b"GET /not-http HTTP/1.1\r\n"
    events = feed_all(parser, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + HANDSHAKE, step)
    # Fed byte by byte, the frames arrive after the stop, in later reads the server routes
    # to the WebSocket; fed whole, they are what follows the handshake.
    [first, handshake] = heads(events)
    assert first.target == b"/a" and not first.upgrade
    assert handshake.is_websocket() and events[-1] is END_OF_MESSAGE
    assert parser.upgrade_rest == b""
    whole = make(backend, ParserLimits(64 * 1024, stop_at_websocket=True))
    events = whole.feed(HANDSHAKE + frames)
    assert len(heads(events)) == 1
    assert whole.upgrade_rest == frames


def test_other_upgrades_and_plain_requests_are_not_websocket(backend: str) -> None:
    parser = make(backend, ParserLimits(64 * 1024, stop_at_websocket=True))
    events = parser.feed(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    found = heads(events)
    assert [h.upgrade for h in found] == [True, False]
    assert not any(h.is_websocket() for h in found)
    assert found[1].target == b"/next" and parser.upgrade_rest is None
    # A handshake must be a GET without a body (RFC 6455 §4.1).
    post = make(backend).feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 1\r\n\r\nx"
    )
    assert not heads(post)[0].is_websocket()
