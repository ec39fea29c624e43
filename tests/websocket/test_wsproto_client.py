"""The same protocol checks with a wsproto client (frames and handshakes built by hand)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import IO_TIMEOUT_SECONDS, run_server
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)

from nea._types import Receive, Scope, Send

from .test_websocket import echo
from .wsproto_client import WsprotoClient

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def open_client(srv: Any, **options: Any) -> AsyncIterator[WsprotoClient]:
    client = await WsprotoClient.open(srv.host, srv.port, "/ws", **options)
    try:
        yield client
    finally:
        client.writer.close()
        with contextlib.suppress(ConnectionError):
            await client.writer.wait_closed()


async def test_echo_fragments_ping_and_close(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, open_client(srv) as client:
        assert isinstance(await client.handshake(), AcceptConnection)
        await client.send(TextMessage(data="hel", message_finished=False))
        await client.send(TextMessage(data="lo", message_finished=True))
        event = await client.next_event()
        assert isinstance(event, TextMessage) and event.data == "hello"
        await client.send(BytesMessage(data=b"\x01" * 70000))  # a 64-bit length frame
        received = b""
        while len(received) < 70000:
            event = await client.next_event()
            assert isinstance(event, BytesMessage)
            received += event.data
        assert received == b"\x01" * 70000
        await client.send(Ping(payload=b"are you there"))
        event = await client.next_event()
        assert isinstance(event, Pong) and event.payload == b"are you there"
        answer = await client.close(4002, "done")
        assert answer is not None and answer.code == 4002


async def test_server_close_code(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, open_client(srv) as client:
        await client.handshake()
        await client.send(TextMessage(data="close"))
        event = await client.next_event()
        assert isinstance(event, CloseConnection)
        assert (event.code, event.reason) == (4000, "bye")


async def test_subprotocol_and_deflate(backend: str, ws_backend: str) -> None:
    async with (
        run_server(echo, http=backend, ws=ws_backend) as srv,
        open_client(srv, subprotocols=["x", "chat"], deflate=True) as client,
    ):
        accepted = await client.handshake()
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "chat"
        assert [e.name for e in accepted.extensions] == ["permessage-deflate"]  # type: ignore[union-attr]
        await client.send(TextMessage(data="a" * 5000))
        event = await client.next_event()
        assert isinstance(event, TextMessage) and event.data == "a" * 5000
        await client.close()


async def test_close_before_accept_is_403(backend: str, ws_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async with run_server(app, http=backend, ws=ws_backend) as srv, open_client(srv) as client:
        rejected = await client.handshake()
        assert isinstance(rejected, RejectConnection) and rejected.status_code == 403


async def test_denial_response(backend: str, ws_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 418, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"teapot"})

    async with run_server(app, http=backend, ws=ws_backend) as srv, open_client(srv) as client:
        rejected = await client.handshake()
        assert isinstance(rejected, RejectConnection) and rejected.status_code == 418
        assert await client.reject_body() == b"teapot"


async def test_max_size_1009(backend: str, ws_backend: str) -> None:
    async with (
        run_server(echo, http=backend, ws=ws_backend, ws_max_size=100) as srv,
        open_client(srv) as client,
    ):
        await client.handshake()
        await client.send(BytesMessage(data=b"x" * 60, message_finished=False))
        await client.send(BytesMessage(data=b"x" * 60, message_finished=True))
        event = await client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1009


async def test_frames_sent_with_the_handshake_are_not_lost(backend: str, ws_backend: str) -> None:
    # One write: the handshake and a masked text frame "early" (RFC 6455 §5.2) behind it.
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"early"))
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    frame = b"\x81" + bytes([0x80 | 5]) + mask + payload
    async with run_server(echo, http=backend, ws=ws_backend) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(request + frame)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_SECONDS)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455 §1.3's example
        echoed = await asyncio.wait_for(reader.readexactly(7), IO_TIMEOUT_SECONDS)
        assert echoed == b"\x81\x05early"
        writer.close()


async def test_keepalive_ping_and_pong_timeout(backend: str, ws_backend: str) -> None:
    # The wsproto client answers nothing by itself: the server's ping arrives, and with no
    # pong the connection is closed with 1011 once --ws-ping-timeout has passed.
    async with (
        run_server(
            echo, http=backend, ws=ws_backend, ws_ping_interval=0.05, ws_ping_timeout=0.05
        ) as srv,
        open_client(srv) as client,
    ):
        await client.handshake()
        event = await client.next_event()
        assert isinstance(event, Ping)
        event = await client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1011


async def test_answered_pings_keep_the_connection(backend: str, ws_backend: str) -> None:
    async with (
        run_server(
            echo, http=backend, ws=ws_backend, ws_ping_interval=0.01, ws_ping_timeout=5
        ) as srv,
        open_client(srv) as client,
    ):
        await client.handshake()
        for _ in range(3):
            ping = await client.next_event()
            assert isinstance(ping, Ping)
            await client.send(ping.response())
        await client.send(TextMessage(data="alive"))
        event = await client.next_event()
        while isinstance(event, Ping):
            await client.send(event.response())
            event = await client.next_event()
        assert isinstance(event, TextMessage) and event.data == "alive"


async def test_graceful_shutdown_closes_1001(backend: str, ws_backend: str) -> None:
    async with run_server(echo, http=backend, ws=ws_backend) as srv, open_client(srv) as client:
        await client.handshake()
        srv.server.shutdown()
        event = await client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1001
