"""The response writer, checked on the bytes it produces."""

from __future__ import annotations

import re

import pytest

from nea._http.errors import ResponseError
from nea._http.response import DateHeader, Response, default_header_block, error_response

PREFIX = b"server: nea\r\n"


def response(method: str = "GET", http10: bool = False, keep_alive: bool = True) -> Response:
    return Response(is_head_request=method == "HEAD", http10=http10, keep_alive=keep_alive)


def test_single_body_gets_content_length_in_one_write() -> None:
    r = response()
    out = r.head_and_body(200, [(b"content-type", b"text/plain")], PREFIX, b"hello", False)
    assert out == (
        b"HTTP/1.1 200 OK\r\nserver: nea\r\ncontent-type: text/plain\r\n"
        b"content-length: 5\r\n\r\nhello"
    )


def test_streamed_body_is_chunked() -> None:
    r = response()
    first = r.head_and_body(200, [], PREFIX, b"abc", True)
    assert b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n" in first
    assert r.frame(b"", True) == b""
    assert r.frame(b"de", False) == b"2\r\nde\r\n0\r\n\r\n"
    assert r.keep_alive


def test_streamed_body_over_http10_closes() -> None:
    r = response(http10=True, keep_alive=True)
    first = r.head_and_body(200, [], PREFIX, b"abc", True)
    assert b"connection: close\r\n" in first and b"chunked" not in first
    assert not r.keep_alive


def test_http10_keep_alive_is_announced() -> None:
    r = response(http10=True, keep_alive=True)
    assert b"connection: keep-alive\r\n" in r.head_and_body(200, [], PREFIX, b"x", False)


def test_content_length_checked_both_ways() -> None:
    with pytest.raises(ResponseError, match="longer than its content-length: declared 3"):
        response().head_and_body(200, [(b"Content-Length", b"3")], PREFIX, b"abcd", False)
    shorter = response()
    shorter.head_and_body(200, [(b"content-length", b"3")], PREFIX, b"a", True)
    with pytest.raises(ResponseError, match="shorter than its content-length: declared 3"):
        shorter.frame(b"b", False)
    exact = response()
    assert exact.head_and_body(200, [(b"content-length", b"2")], PREFIX, b"ab", False).endswith(
        b"content-length: 2\r\n\r\nab"
    )


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_send_no_body(status: int) -> None:
    out = response().head_and_body(status, [], PREFIX, b"", False)
    assert out.endswith(b"\r\n\r\n") and b"content-length" not in out


def test_head_keeps_headers_and_drops_body() -> None:
    out = response("HEAD").head_and_body(200, [(b"content-length", b"5")], PREFIX, b"hello", False)
    assert out.endswith(b"content-length: 5\r\n\r\n")


def test_app_connection_close_and_header_injection() -> None:
    r = response()
    r.head_and_body(200, [(b"connection", b"close")], PREFIX, b"", False)
    assert not r.keep_alive
    with pytest.raises(ResponseError, match="line break"):
        response().head_and_body(200, [(b"x", b"a\r\nb: c")], PREFIX, b"", False)
    with pytest.raises(ResponseError, match="must be \\(bytes, bytes\\) pairs"):
        response().head_and_body(200, [("x", "str")], PREFIX, b"", False)  # type: ignore[list-item]


def test_default_headers_and_date() -> None:
    assert default_header_block(True, [("x-a", "1")]) == b"server: nea\r\nx-a: 1\r\n"
    assert default_header_block(False, []) == b""
    line = DateHeader().line()
    assert re.fullmatch(rb"date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", line)


def test_error_response_closes() -> None:
    out = error_response(431, "Request Header Fields Too Large", PREFIX)
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close\r\n" in out and out.endswith(b"Too Large")
