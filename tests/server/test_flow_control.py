"""Flow control of the driver, checked on a fake transport (no sockets, no timing)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import pytest

import nea
from nea._server.protocol import HTTPProtocol
from nea._server.state import BODY_HIGH_WATER_BYTES, ServerState
from nea._types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.asyncio


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading_paused = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.1.1.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def connect(app: ASGIApp, backend: str) -> tuple[HTTPProtocol, FakeTransport]:
    config = nea.Config(app=app, http=backend, lifespan="off")
    state = ServerState(config, app, {}, lambda: None)
    protocol = HTTPProtocol(state, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_request_body_backpressure(backend: str) -> None:
    gate = asyncio.Event()
    first_read = asyncio.Event()
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await gate.wait()
        message = await receive()
        first_read.set()
        size = len(message["body"])
        while message["more_body"]:
            message = await receive()
            size += len(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % size})
        done.set()

    protocol, transport = connect(app, backend)
    total = 3 * BODY_HIGH_WATER_BYTES
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    protocol.data_received(b"x" * (BODY_HIGH_WATER_BYTES + 1))
    assert transport.reading_paused  # above the high-water mark, nobody reading yet
    gate.set()
    await first_read.wait()
    assert not transport.reading_paused  # the app consumed the buffer
    protocol.data_received(b"x" * (total - BODY_HIGH_WATER_BYTES - 1))
    await done.wait()
    assert transport.written.endswith(b"\r\n\r\n%d" % total)


async def test_response_backpressure_waits_for_drain(backend: str) -> None:
    sending = asyncio.Event()
    sent = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sending.set()
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        sent.set()
        await send({"type": "http.response.body", "body": b"b"})

    protocol, _transport = connect(app, backend)
    protocol.pause_writing()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await sending.wait()
    assert not sent.is_set()  # send() is waiting for the transport to drain
    protocol.resume_writing()
    await sent.wait()


async def test_pipelined_request_pauses_reading_until_its_turn(backend: str) -> None:
    release = asyncio.Event()
    served: list[str] = []
    both = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/1":
            await release.wait()
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if len(served) == 2:
            both.set()

    protocol, transport = connect(app, backend)
    protocol.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.reading_paused
    release.set()
    await both.wait()
    assert served == ["/1", "/2"] and not transport.reading_paused


async def test_head_timer_is_not_restarted_by_trickling_bytes(backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    protocol, _transport = connect(app, backend)
    deadline = protocol._deadline
    assert deadline > 0  # set when the connection opened
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    protocol.data_received(b"Host: x\r\n")
    assert protocol._deadline == deadline  # slow-loris: more bytes do not buy more time
    protocol.data_received(b"\r\n")
    assert protocol._deadline == 0.0  # the head is complete
    protocol.connection_lost(None)


async def test_a_finished_request_is_not_kept_until_the_next_loop_iteration(
    backend: str,
) -> None:
    """A request whose head left with its body is freed when its task ends, not by the
    head flush on the next loop iteration: under load a whole burst of finished requests
    (and the blocks their apps left in them, pinning region pages) stayed alive together."""

    class Kept:
        pass

    kept: list[weakref.ref[Kept]] = []
    seen_alive: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if kept:  # the second request, run in the same loop iteration as the first
            seen_alive.append(kept[0]() is not None)
        else:
            scope["kept"] = thing = Kept()  # lives as long as the request's scope
            kept.append(weakref.ref(thing))
            del thing
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    first, first_transport = connect(app, backend)
    second, second_transport = connect(app, backend)
    first.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    second.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert first_transport.written.startswith(b"HTTP/1.1 200")
    assert second_transport.written.startswith(b"HTTP/1.1 200")
    assert seen_alive == [False]
