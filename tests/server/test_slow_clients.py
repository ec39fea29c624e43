"""Slow request bodies: the body timeout (408) and reading small bodies before admission, so
that clients stalling mid-body never hold the slots. Real sockets, once per parser backend."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from tests.conftest import IO_TIMEOUT_SECONDS, RawConnection, RunningServer, run_server

from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio

STALLED_HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
DRIBBLE_HEAD = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body or scope["path"].encode()})


@contextlib.asynccontextmanager
async def open_connections(srv: RunningServer, count: int) -> AsyncIterator[list[RawConnection]]:
    conns: list[RawConnection] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            conns.append(RawConnection(reader, writer))
        yield conns
    finally:
        for conn in conns:
            await conn.close()


async def timed_get(srv: RunningServer) -> tuple[int, float]:
    started = time.perf_counter()
    async with srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await conn.read_response()
    return response.status, time.perf_counter() - started


async def test_stalled_and_dribbling_bodies_hold_no_slot(backend: str) -> None:
    # 70 bodies that stop after the head and 100 uploads that send one byte per round, with
    # 4 slots and a queue that gives up at once: on a server where waiting for a body holds
    # a slot, every GET below gets 503.
    options = {"slots": 4, "queue": 0, "queue_timeout": 0.0, "access_log": False}
    async with (
        run_server(echo, http=backend, **options) as srv,
        open_connections(srv, 70) as stalled,
        open_connections(srv, 100) as dribbling,
    ):
        for conn in stalled:
            await conn.send(STALLED_HEAD)
        for conn in dribbling:
            await conn.send(DRIBBLE_HEAD)
        latencies = []
        for _ in range(30):
            for conn in dribbling:
                await conn.send(b"x")
            status, seconds = await timed_get(srv)
            assert status == 200
            latencies.append(seconds)
        assert srv.server.statistics().busy == 0  # nobody waiting for a body holds a slot
        # Generous for a loaded 2-core CI machine; locally each GET takes about a millisecond.
        assert max(latencies) < 1.0, latencies
        # The uploads still complete and are answered.
        for conn in dribbling[:3]:
            await conn.send(b"y" * 970)
            response = await conn.read_response()
            assert response.status == 200 and response.body == b"x" * 30 + b"y" * 970


async def test_stalled_body_gets_408_and_the_server_keeps_serving(backend: str) -> None:
    async with run_server(echo, http=backend, timeout_request_body=0.2) as srv:
        raw = await srv.exchange(STALLED_HEAD + b"abc")
        assert raw.startswith(b"HTTP/1.1 408 ") and b"connection: close\r\n" in raw
        status, _ = await timed_get(srv)
        assert status == 200


async def test_stalled_chunked_body_gets_408(backend: str) -> None:
    async with run_server(echo, http=backend, timeout_request_body=0.2) as srv:
        raw = await srv.exchange(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
    assert raw.startswith(b"HTTP/1.1 408 ")


async def test_large_body_takes_the_slot_and_is_bounded_by_the_body_timeout(backend: str) -> None:
    # Above --buffer-request-body the request is admitted at once (the app streams the
    # body); a client that stalls then holds the slot only until the body timeout.
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        seen.append(message["type"])
        if message["type"] == "http.request":
            seen.append((await receive())["type"])

    options = {"slots": 1, "buffer_request_body": 16, "timeout_request_body": 0.3}
    async with run_server(app, http=backend, **options) as srv, srv.connect() as conn:
        await conn.send(STALLED_HEAD + b"a" * 100)
        assert (await conn.read_head())[0] == 408
        assert await asyncio.wait_for(conn.read_until_close(), IO_TIMEOUT_SECONDS)
    assert seen == ["http.request", "http.disconnect"]


async def test_body_up_to_the_limit_reaches_the_app_whole(backend: str) -> None:
    bodies: list[tuple[bytes, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        bodies.append((message["body"], message["more_body"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with run_server(app, http=backend, buffer_request_body=64) as srv, srv.connect() as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n")
        await conn.send(b"a" * 30)
        await conn.send(b"b" * 34)
        assert (await conn.read_response()).status == 204
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
        )
        assert (await conn.read_response()).status == 204
    assert bodies == [(b"a" * 30 + b"b" * 34, False), (b"abc", False)]


async def test_pipelined_requests_with_buffered_bodies_are_answered_in_order(backend: str) -> None:
    async with run_server(echo, http=backend) as srv, srv.connect() as conn:
        await conn.send(
            b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
            b"POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\ntwo\r\n0\r\n\r\n"
            b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /4 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nfo"
        )
        bodies = [(await conn.read_response()).body for _ in range(3)]
        await conn.send(b"ur")
        bodies.append((await conn.read_response()).body)
    assert bodies == [b"one", b"two", b"/3", b"four"]
