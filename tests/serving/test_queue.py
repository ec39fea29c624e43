"""nea's server with every slot busy: FIFO order, 503 when the queue is full or the wait too
long, a client that leaves while queued, and the statistics that count all of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from tests.conftest import IO_TIMEOUT_SECONDS, RawConnection, run_server

from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio


class Gate:
    """An app whose requests wait until the test releases them, recording their order."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self._entered: dict[str, asyncio.Event] = {}
        self._release: dict[str, asyncio.Event] = {}

    def _event(self, table: dict[str, asyncio.Event], path: str) -> asyncio.Event:
        return table.setdefault(path, asyncio.Event())

    async def wait_entered(self, path: str) -> None:
        await asyncio.wait_for(self._event(self._entered, path).wait(), IO_TIMEOUT_SECONDS)

    def release(self, path: str) -> None:
        self._event(self._release, path).set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        self.entered.append(path)
        self._event(self._entered, path).set()
        await self._event(self._release, path).wait()
        body = path.encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until the in-process server reached ``condition``.

    The server runs in this loop, so each turn lets it read and route what the test sent;
    this waits on the server's progress, never on time (the deadline only bounds a failure).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IO_TIMEOUT_SECONDS
    while not condition():
        if loop.time() > deadline:
            pytest.fail("the server did not reach the expected state")
        await asyncio.sleep(0)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_waiting_requests_get_slots_in_arrival_order(backend: str) -> None:
    gate = Gate()
    async with (
        run_server(gate, http=backend, slots=1, queue=3) as srv,
        contextlib.AsyncExitStack() as stack,
    ):
        stats = srv.server.statistics
        conns: dict[str, RawConnection] = {}
        for path in ("/a", "/b", "/c", "/d"):
            conns[path] = await stack.enter_async_context(srv.connect())
            await conns[path].send(get(path))
            if path == "/a":
                await gate.wait_entered("/a")
            else:
                queued = len(conns) - 1
                await until(lambda queued=queued: stats().waiting == queued)  # type: ignore[misc]
        for path in ("/a", "/b", "/c", "/d"):
            await gate.wait_entered(path)
            gate.release(path)
            response = await conns[path].read_response()
            assert response.status == 200 and response.body == path.encode()
        final = stats()
    assert gate.entered == ["/a", "/b", "/c", "/d"]
    assert (final.busy, final.waiting, final.served, final.rejected) == (0, 0, 4, 0)


async def test_full_queue_answers_503(backend: str) -> None:
    gate = Gate()
    async with run_server(gate, http=backend, slots=1, queue=0) as srv:
        async with srv.connect() as first:
            await first.send(get("/a"))
            await gate.wait_entered("/a")
            async with srv.connect() as second:
                await second.send(get("/b"))
                response = await second.read_response()
            gate.release("/a")
            assert (await first.read_response()).status == 200
        stats = srv.server.statistics()
    assert response.status == 503
    assert response.header("retry-after") == "1"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.body.startswith(b"Service Unavailable")
    assert gate.entered == ["/a"]
    assert (stats.rejected, stats.served, stats.busy) == (1, 1, 0)


async def test_queue_timeout_answers_503(backend: str) -> None:
    gate = Gate()
    async with run_server(gate, http=backend, slots=1, queue_timeout=0.05) as srv:
        async with srv.connect() as first:
            await first.send(get("/a"))
            await gate.wait_entered("/a")
            async with srv.connect() as second:
                await second.send(get("/b"))
                response = await second.read_response()  # after the 50 ms timeout
            gate.release("/a")
            await first.read_response()
        stats = srv.server.statistics()
    assert response.status == 503 and response.header("retry-after") == "1"
    assert gate.entered == ["/a"]
    assert (stats.rejected, stats.waiting) == (1, 0)


async def test_client_that_leaves_while_queued_never_reaches_the_app(backend: str) -> None:
    gate = Gate()
    async with run_server(gate, http=backend, slots=1) as srv:
        stats = srv.server.statistics
        async with srv.connect() as first:
            await first.send(get("/a"))
            await gate.wait_entered("/a")
            async with srv.connect() as leaving:
                await leaving.send(get("/gone"))
                await until(lambda: stats().waiting == 1)
            await until(lambda: stats().abandoned == 1)
            async with srv.connect() as third:
                await third.send(get("/c"))
                await until(lambda: stats().waiting == 1)
                gate.release("/a")
                assert (await first.read_response()).status == 200
                await gate.wait_entered("/c")
                gate.release("/c")
                assert (await third.read_response()).body == b"/c"
        final = stats()
    assert gate.entered == ["/a", "/c"]
    assert (final.abandoned, final.served, final.busy, final.waiting) == (1, 2, 0, 0)


async def test_queued_request_body_reaches_the_app_unchanged(backend: str) -> None:
    bodies: list[bytes] = []
    gate = Gate()

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/a":
            await gate(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async with run_server(echo, http=backend, slots=1) as srv:
        stats = srv.server.statistics
        async with srv.connect() as first, srv.connect() as second:
            await first.send(get("/a"))
            await gate.wait_entered("/a")
            payload = b"x" * 100_000
            await second.send(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload)
                + payload
            )
            await until(lambda: stats().waiting == 1)
            gate.release("/a")
            await first.read_response()
            response = await second.read_response()
    assert response.status == 200 and response.body == payload
    assert bodies == [payload]


async def test_queued_expect_continue_client_that_leaves_is_dropped(backend: str) -> None:
    """nea's server tells admission about the disconnect directly: the queued request's body
    is never asked for (no ``100 Continue``), yet its leaving is noticed."""
    gate = Gate()
    async with run_server(gate, http=backend, slots=1) as srv:
        stats = srv.server.statistics
        async with srv.connect() as first:
            await first.send(get("/a"))
            await gate.wait_entered("/a")
            async with srv.connect() as leaving:
                await leaving.send(
                    b"POST /gone HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 5\r\n\r\n"
                )
                await until(lambda: stats().waiting == 1)
            await until(lambda: stats().abandoned == 1)
            gate.release("/a")
            assert (await first.read_response()).status == 200
    assert gate.entered == ["/a"]


async def test_queued_expect_continue_request_gets_100_once_admitted(backend: str) -> None:
    gate = Gate()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/a":
            await gate(scope, receive, send)
            return
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    async with run_server(app, http=backend, slots=1) as srv:
        stats = srv.server.statistics
        async with srv.connect() as first, srv.connect() as second:
            await first.send(get("/a"))
            await gate.wait_entered("/a")
            await second.send(
                b"POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
            )
            await until(lambda: stats().waiting == 1)
            gate.release("/a")
            assert (await first.read_response()).status == 200
            interim = await second.read_response()
            assert interim.status == 100  # only now, when the app asks for the body
            await second.send(b"hello")
            response = await second.read_response()
    assert response.status == 200 and response.body == b"hello"
