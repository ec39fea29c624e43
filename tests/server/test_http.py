"""Real-socket tests of the HTTP/1.1 behaviour, once per parser backend."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import pytest
from tests.conftest import run_server

from nea._types import Message, Receive, Scope, Send

pytestmark = pytest.mark.asyncio


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def streamer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one ", b"two ", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_keep_alive_serves_several_requests_on_one_connection(backend: str) -> None:
    async with run_server(hello, http=backend) as srv, srv.connect() as conn:
        for path in (b"/a", b"/b"):
            await conn.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await conn.read_response()
            assert response.status == 200 and response.body == path
            assert response.header("server") == "nea" and response.header("date")


async def test_http10_gets_a_response_then_close(backend: str) -> None:
    async with run_server(hello, http=backend) as srv:
        raw = await srv.exchange(b"GET /old HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in raw and raw.endswith(b"\r\n\r\n/old")


async def test_pipelined_requests_answered_in_order(backend: str) -> None:
    async with run_server(hello, http=backend) as srv, srv.connect() as conn:
        await conn.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)))
        bodies = [(await conn.read_response()).body for _ in range(5)]
    assert bodies == [b"/%d" % i for i in range(5)]


async def test_chunked_request_and_large_body(backend: str) -> None:
    async with run_server(echo, http=backend) as srv, srv.connect() as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert (await conn.read_response()).body == b"hello world"
        big = bytes(range(256)) * 4096  # 1 MiB: crosses the body high-water mark
        await conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
        await conn.send(big)
        assert (await conn.read_response()).body == big


async def test_streamed_response_is_chunked(backend: str) -> None:
    async with run_server(streamer, http=backend) as srv, srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_response()
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"one two three"


async def test_expect_100_continue_sent_when_app_reads(backend: str) -> None:
    async with run_server(echo, http=backend) as srv, srv.connect() as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        status, _ = await conn.read_head()
        assert status == 100
        await conn.send(b"data")
        assert (await conn.read_response()).body == b"data"


async def test_expect_100_continue_not_sent_when_app_does_not_read(backend: str) -> None:
    # A long keep-alive timeout: only the unread body may close this connection.
    options: dict[str, Any] = {"timeout_keep_alive": 60}
    async with run_server(hello, http=backend, **options) as srv, srv.connect() as conn:
        await conn.send(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        response = await conn.read_response()
        assert response.status == 200 and response.body == b"/x"
        # The body was never asked for, so the connection cannot be reused, and the
        # response says so (a client would otherwise send its next request on it).
        assert response.header("connection") == "close"
        assert await conn.read_until_close() == b""


async def test_head_keeps_headers_without_body(backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    async with run_server(app, http=backend) as srv, srv.connect() as conn:
        await conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await conn.read_response(head_request=True)
        assert head.header("content-length") == "5"
        assert (await conn.read_response()).body == b"hello"


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_status(backend: str, status: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with run_server(app, http=backend) as srv, srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(2):
            response = await conn.read_response()
            assert response.status == status and response.header("content-length") is None


async def test_default_headers_can_be_changed(backend: str) -> None:
    options: dict[str, Any] = {
        "headers": (("x-served-by", "test"),),
        "server_header": False,
        "date_header": False,
    }
    async with run_server(hello, http=backend, **options) as srv, srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_response()
    assert response.header("x-served-by") == "test"
    assert response.header("server") is None and response.header("date") is None


LINES_101 = b"".join(b"X-%d: v\r\n" % i for i in range(101))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + LINES_101 + b"\r\n", 431),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413),
    ],
    ids=[
        "malformed",
        "head-too-big",
        "101-lines",
        "http2",
        "cl-and-te",
        "dup-cl",
        "chunks",
        "body",
    ],
)
async def test_bad_requests_get_an_error_and_the_server_keeps_serving(
    backend: str, request_bytes: bytes, status: int
) -> None:
    async with run_server(echo, http=backend, limit_request_body=10) as srv:
        raw = await srv.exchange(request_bytes)
        assert raw.startswith(b"HTTP/1.1 %d " % status)
        async with httpx.AsyncClient(base_url=srv.url) as client:
            assert (await client.post("/", content=b"fine")).content == b"fine"


async def test_chunked_body_over_limit_is_413(backend: str) -> None:
    async with run_server(echo, http=backend, limit_request_body=10) as srv:
        raw = await srv.exchange(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        )
    assert raw.startswith(b"HTTP/1.1 413 ")


async def test_slow_headers_get_408(backend: str) -> None:
    async with run_server(hello, http=backend, timeout_request_headers=0.2) as srv:
        raw = await srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert raw.startswith(b"HTTP/1.1 408 ")


async def test_idle_keep_alive_connection_is_closed(backend: str) -> None:
    async with (
        run_server(hello, http=backend, timeout_keep_alive=0.1) as srv,
        srv.connect() as conn,
    ):
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await conn.read_response()).status == 200
        assert await conn.read_until_close() == b""


async def test_scope_matches_the_spec(backend: str) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    async with run_server(app, http=backend, root_path="/api") as srv:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            await client.get("/caf%C3%A9?q=1", headers={"X-Custom": "Yes"})
        port = srv.port
    scope = seen[0]
    assert scope["type"] == "http" and scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1" and scope["method"] == "GET"
    assert scope["scheme"] == "http" and scope["root_path"] == "/api"
    assert scope["path"] == "/api/café" and scope["raw_path"] == b"/api/caf%C3%A9"
    assert scope["query_string"] == b"q=1"
    assert (b"x-custom", b"Yes") in scope["headers"]
    assert scope["server"] == ("127.0.0.1", port) and scope["client"][0] == "127.0.0.1"
    assert set(scope["extensions"]) == {"nea.budget"} and scope["state"] == {}


async def test_client_disconnect_reaches_the_app(backend: str) -> None:
    disconnected: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    arrived = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        arrived.set()
        disconnected.set_result(await receive())

    async with run_server(app, http=backend) as srv:
        async with srv.connect() as conn:
            await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await arrived.wait()
        message = await asyncio.wait_for(disconnected, 5)
    assert message == {"type": "http.disconnect"}


async def test_upgrade_is_served_as_http_with_one_warning(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    import nea._server.protocol as protocol

    protocol._upgrade_warned = False
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    with caplog.at_level(logging.WARNING, logger="nea.error"):
        async with run_server(hello, http=backend, ws="none") as srv, srv.connect() as conn:
            for _ in range(2):
                await conn.send(request)
                assert (await conn.read_response()).status == 200
    warnings = [r for r in caplog.records if "Upgrade" in r.getMessage()]
    assert len(warnings) == 1


async def test_access_log_line(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nea.access"):
        async with (
            run_server(hello, http=backend) as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            await client.get("/x?y=1")
    records = [r for r in caplog.records if r.name == "nea.access"]
    assert len(records) == 1
    assert re.search(r' - "GET /x\?y=1 HTTP/1.1" 200 OK \d+\.\dms peak \d', records[0].getMessage())
    assert records[0].duration >= 0  # type: ignore[attr-defined]
    assert records[0].peak > 0  # type: ignore[attr-defined]


async def test_unread_large_body_is_discarded_and_connection_reused(backend: str) -> None:
    async with run_server(hello, http=backend) as srv, srv.connect() as conn:
        big = b"x" * (1024 * 1024)
        await conn.send(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
        send_body = asyncio.create_task(conn.send(big))
        assert (await conn.read_response()).body == b"/a"
        await send_body
        await conn.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await conn.read_response()).body == b"/b"


async def test_unix_socket(backend: str, tmp_path: Any) -> None:
    import nea

    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    path = str(tmp_path / "nea.sock")
    server = nea.Server(nea.Config(app=app, uds=path, http=backend, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await server.wait_started()
    try:
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport, base_url="http://nea") as client:
            assert (await client.get("/u")).text == "/u"
    finally:
        server.shutdown()
        await serving
    assert seen[0]["server"] == (path, None) and seen[0]["client"] is None


async def test_bad_request_behind_a_good_one_is_answered_in_order(backend: str) -> None:
    async with run_server(hello, http=backend) as srv, srv.connect() as conn:
        await conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        first = await conn.read_response()
        second = await conn.read_response()
        assert (first.status, first.body) == (200, b"/ok")
        assert second.status == 400 and second.header("connection") == "close"
        assert await conn.read_until_close() == b""


async def test_request_connection_close_is_honoured(backend: str) -> None:
    async with run_server(hello, http=backend) as srv:
        raw = await srv.exchange(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"connection: close\r\n" in raw and raw.endswith(b"/c")


async def test_head_is_sent_before_a_slow_first_body(backend: str) -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()  # e.g. a stream waiting for its first event
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with run_server(app, http=backend) as srv, srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers = await conn.read_head()
        assert status == 200 and ("transfer-encoding", "chunked") in headers
        release.set()
        assert await conn._read_chunked() == b"late"
