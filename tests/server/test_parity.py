"""Both parser backends answer every corner of HTTP/1.1 framing alike (docs/http.md has the
table). Each case runs on a real socket once per backend: the status, then whether the
connection stays usable (a second request is answered) or is closed."""

from __future__ import annotations

import pytest
from tests.conftest import run_server

from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio

POST = b"POST /p HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
KEEP, CLOSE = "keep-alive", "close"

# (id, request, status, connection afterwards, body the app answers with for a 200)
CASES: list[tuple[str, bytes, int, str, bytes | None]] = [
    (
        "te-xchunked-with-length",
        POST + b"Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc",
        400,
        CLOSE,
        None,
    ),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n", 400, CLOSE, None),
    (
        "te-chunked-twice",
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        CLOSE,
        None,
    ),
    (
        "te-two-headers",
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        CLOSE,
        None,
    ),
    (
        "te-unknown-then-chunked",
        POST + b"Transfer-Encoding: x, chunked\r\n\r\n0\r\n\r\n",
        501,
        CLOSE,
        None,
    ),
    (
        "te-gzip-chunked",
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        CLOSE,
        None,
    ),
    (
        "te-empty-element-first",
        POST + b"Transfer-Encoding: ,chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        200,
        KEEP,
        b"POST /p abc",
    ),
    (
        "te-empty-element-last",
        POST + b"Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n",
        400,
        CLOSE,
        None,
    ),
    (
        "te-with-length",
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        400,
        CLOSE,
        None,
    ),
    ("header-del", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", 400, CLOSE, None),
    ("header-nul", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400, CLOSE, None),
    ("header-obs-text", b"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xe9\r\n\r\n", 200, KEEP, b"GET / "),
    ("header-space-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n", 400, CLOSE, None),
    ("header-obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, CLOSE, None),
    ("header-bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400, CLOSE, None),
    (
        "length-repeated-equal",
        POST + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\na",
        400,
        CLOSE,
        None,
    ),
    ("length-list", POST + b"Content-Length: 1, 1\r\n\r\na", 400, CLOSE, None),
    ("method-unknown-token", b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501, CLOSE, None),
    ("method-webdav", b"PROPFIND /d HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, b"PROPFIND /d "),
    ("method-not-a-token", b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("target-authority-form", b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    (
        "target-authority-connect",
        b"CONNECT x:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        200,
        KEEP,
        b"CONNECT x:80 ",
    ),
    ("target-asterisk-get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("target-asterisk-options", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, b"OPTIONS * "),
    (
        "target-absolute-form",
        b"GET http://x/a?q HTTP/1.1\r\nHost: x\r\n\r\n",
        200,
        KEEP,
        b"GET /a ",
    ),
    ("target-fragment", b"GET /a#f HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, b"GET /a "),
    (
        "target-too-long",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        CLOSE,
        None,
    ),
    (
        "head-too-large",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        CLOSE,
        None,
    ),
    ("empty-line-first", b"\r\nGET /e HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, b"GET /e "),
    ("double-space-after-method", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("double-space-after-target", b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("version-1.2", b"GET /v HTTP/1.2\r\nHost: x\r\n\r\n", 200, KEEP, b"GET /v "),
    ("version-1.10", b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("version-2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, CLOSE, None),
    ("version-0.9", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, CLOSE, None),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, CLOSE, None),
    ("chunk-size-overflow", CHUNKED + b"FFFFFFFFFFFFFFFFFF1\r\n", 400, CLOSE, None),
    ("chunk-line-bare-lf", CHUNKED + b"3\nabc\n0\n\n", 400, CLOSE, None),
    ("chunk-data-bare-lf", CHUNKED + b"3\r\nabc\n0\r\n\r\n", 400, CLOSE, None),
    ("chunk-size-trailing-space", CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n", 400, CLOSE, None),
    ("chunk-extension", CHUNKED + b"3;a=b\r\nabc\r\n0\r\n\r\n", 200, KEEP, b"POST /p abc"),
    ("chunk-trailer", CHUNKED + b"3\r\nabc\r\n0\r\nX: y\r\n\r\n", 200, KEEP, b"POST /p abc"),
]


async def describe(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    text = f"{scope['method']} {scope['path']} ".encode() + body
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text})


@pytest.mark.parametrize(
    ("request_bytes", "status", "connection", "answer"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_both_backends_answer_alike(
    backend: str, request_bytes: bytes, status: int, connection: str, answer: bytes | None
) -> None:
    async with run_server(describe, http=backend) as srv, srv.connect() as conn:
        await conn.send(request_bytes)
        response = await conn.read_response()
        assert response.status == status
        if answer is not None:
            assert response.body == answer
        if connection == KEEP:
            await conn.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await conn.read_response()).body == b"GET /next "
        else:
            assert response.header("connection") == "close"
            assert await conn.read_until_close() == b""
