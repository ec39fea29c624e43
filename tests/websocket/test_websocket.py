"""Real-socket tests of the ASGI websocket protocol with the ``websockets`` client, once per
parser backend."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from tests.conftest import IO_TIMEOUT_SECONDS, run_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"http"})
        return
    assert scope["type"] == "websocket"
    message = await receive()
    assert message == {"type": "websocket.connect"}
    subprotocol = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            return
        if message.get("text") == "raise":
            raise RuntimeError("boom")
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})


def url(srv: Any, path: str = "/ws") -> str:
    return f"ws://{srv.host}:{srv.port}{path}"


async def test_echo_text_and_binary(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, connect(url(srv)) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"


async def test_scope(backend: str, ws_backend: str) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    async with (
        run_server(app, http=backend, ws=ws_backend) as srv,
        connect(url(srv, "/a%20b?x=1")) as ws,
    ):
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    scope = seen[0]
    assert scope["type"] == "websocket"
    assert scope["asgi"]["spec_version"] == "2.4"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/a b" and scope["query_string"] == b"x=1"
    assert "method" not in scope
    assert "websocket.http.response" in scope["extensions"]
    assert "nea.budget" in scope["extensions"]


async def test_fragmented_message_is_delivered_whole(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, connect(url(srv)) as ws:
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented"
        await ws.send([b"ab", b"cd"])
        assert await ws.recv() == b"abcd"


async def test_ping_is_answered(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, connect(url(srv)) as ws:
        pong = await ws.ping(b"x")
        await asyncio.wait_for(pong, IO_TIMEOUT_SECONDS)


async def test_server_close_code_and_reason(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, connect(url(srv)) as ws:
        await ws.send("close")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "bye")


async def test_client_close_code_reaches_the_app(backend: str, ws_backend: str) -> None:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.set_result(await receive())

    async with run_server(app, http=backend, ws=ws_backend) as srv:
        async with connect(url(srv)) as ws:
            await ws.close(code=4001, reason="client bye")
        message = await asyncio.wait_for(got, IO_TIMEOUT_SECONDS)
    assert message == {"type": "websocket.disconnect", "code": 4001, "reason": "client bye"}


async def test_subprotocol_negotiation(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv:
        async with connect(url(srv), subprotocols=["other", "chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
        async with connect(url(srv), subprotocols=["other"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol is None


async def test_close_before_accept_is_403(backend: str, ws_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async with run_server(app, http=backend, ws=ws_backend) as srv:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(srv)):
                pass
    assert info.value.response.status_code == 403


async def test_denial_response(backend: str, ws_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-why", b"token")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})

    async with run_server(app, http=backend, ws=ws_backend) as srv:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(srv)):
                pass
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["x-why"] == "token"
    assert response.body == b"no entry"


async def test_message_over_max_size_closes_1009(backend: str, ws_backend: str) -> None:
    async with (
        run_server(echo, http=backend, ws=ws_backend, ws_max_size=1000) as srv,
        connect(url(srv)) as ws,
    ):
        await ws.send("x" * 1000)
        assert await ws.recv() == "x" * 1000
        await ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_app_exception_closes_1011(
    backend: str, ws_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="nea.error"):
        async with run_server(echo, http=backend, ws=ws_backend) as srv, connect(url(srv)) as ws:
            await ws.send("raise")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert any("Exception in ASGI application" in r.getMessage() for r in caplog.records)


async def test_app_exception_before_accept_is_500(backend: str, ws_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async with run_server(app, http=backend, ws=ws_backend) as srv:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(srv)):
                pass
    assert info.value.response.status_code == 500


@pytest.mark.parametrize("deflate", [True, False])
async def test_per_message_deflate(backend: str, ws_backend: str, deflate: bool) -> None:
    async with (
        run_server(echo, http=backend, ws=ws_backend, ws_per_message_deflate=deflate) as srv,
        connect(url(srv), compression="deflate") as ws,
    ):
        extensions = ws.response.headers.get("sec-websocket-extensions") or ""
        assert ("permessage-deflate" in extensions) is deflate
        await ws.send("z" * 10000)
        assert await ws.recv() == "z" * 10000


async def test_ws_none_serves_the_handshake_as_http(backend: str) -> None:
    async with run_server(echo, http=backend, ws="none") as srv:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(srv)):
                pass
    assert info.value.response.status_code == 200


async def test_http_keeps_working_beside_open_websockets(backend: str, ws_backend: str) -> None:
    # 80 open sockets, more than the request slots: HTTP requests still get served.
    async with run_server(echo, http=backend, ws=ws_backend, slots=4, ws_slots=100) as srv:
        sockets = [await connect(url(srv)) for _ in range(80)]
        try:
            async with httpx.AsyncClient(base_url=f"http://{srv.host}:{srv.port}") as client:
                for _ in range(20):
                    response = await client.get("/")
                    assert response.status_code == 200 and response.content == b"http"
            for ws in sockets:
                await ws.send("still here")
                assert await ws.recv() == "still here"
        finally:
            for ws in sockets:
                await ws.close()


async def test_access_log_lines(
    backend: str, ws_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def deny(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/ok":
            await echo(scope, receive, send)
            return
        await receive()
        await send({"type": "websocket.close"})

    with caplog.at_level(logging.INFO, logger="nea.access"):
        async with run_server(deny, http=backend, ws=ws_backend) as srv:
            async with connect(url(srv, "/ok")) as ws:
                await ws.send("x")
                await ws.recv()
            with pytest.raises(InvalidStatus):
                async with connect(url(srv, "/no")):
                    pass
    lines = [r.getMessage() for r in caplog.records if r.name == "nea.access"]
    assert len(lines) == 2, lines
    assert lines[0].endswith(' - "WebSocket /ok" [accepted]')
    assert lines[1].endswith(' - "WebSocket /no" 403')
