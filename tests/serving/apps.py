"""Apps for the budgeted-serving tests (importable by name for the subprocess tests).

``hog_app`` is raw ASGI: ``/alloc/N`` allocates N MiB (1 MiB steps) and answers how much;
``/swallow/N`` does the same but catches the MemoryError and answers 200 anyway;
``/stream/N`` starts a chunked response, then allocates; ``/malloc/N`` asks C's malloc for
N MiB directly (not metered: only ``--memory-limit`` can refuse it).
``edge_app``: ``/edge/N`` fills its budget until about N bytes are left, then answers
(the server's own work for the response must not need any of those bytes).
``starlette_app`` has ``async def`` and ``def`` endpoints of both kinds (neighbour, hog).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

MiB = 1024 * 1024


def allocate(mib: int) -> int:
    chunks = [bytearray(MiB) for _ in range(mib)]
    return len(chunks)


async def text(send: Any, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _malloc(mib: int) -> bytes:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    pointer = libc.malloc(mib * MiB)
    if not pointer:
        return b"malloc refused"
    ctypes.memset(pointer, 1, mib * MiB)  # touch it, so it is really used
    libc.free(pointer)
    return b"malloc ok"


async def hog_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    _, kind, amount = scope["path"].split("/")
    mib = int(amount)
    if kind == "alloc":
        await text(send, b"allocated %d MiB" % allocate(mib))
    elif kind == "swallow":
        with contextlib.suppress(MemoryError):  # the kind of app that catches everything
            allocate(mib)
        await text(send, b"all good")
    elif kind == "stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
        allocate(mib)
        await send({"type": "http.response.body", "body": b"done\n"})
    elif kind == "malloc":
        await text(send, _malloc(mib))
    elif kind == "budget":
        request_budget = scope["extensions"]["nea.budget"]
        await text(send, b"limit %d" % request_budget.limit)


EDGE_BODY = b"made it"
_EDGE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(EDGE_BODY))],
}
_EDGE_BODY = {"type": "http.response.body", "body": EDGE_BODY}


async def edge_app(scope: Any, receive: Any, send: Any) -> None:
    """Leave about ``N`` bytes of the request's budget, then send a prebuilt response."""
    if scope["type"] != "http":
        return
    room = int(scope["path"].rsplit("/", 1)[1])
    request_budget = scope["extensions"]["nea.budget"]
    filler = bytearray(max(request_budget.limit - request_budget.live - room, 0))
    await send(_EDGE_START)
    await send(_EDGE_BODY)
    del filler


async def neighbour(request: Request) -> Response:
    data = [b"%d" % i for i in range(5000)]  # about 100 KB of small objects
    await asyncio.sleep(0.01)  # the workload awaits, so neighbours overlap the hogs
    return PlainTextResponse(f"ok {len(data)}")


def sync_neighbour(request: Request) -> Response:
    data = [b"%d" % i for i in range(5000)]
    return PlainTextResponse(f"ok {len(data)}")


async def hog(request: Request) -> Response:
    return PlainTextResponse(f"allocated {allocate(256)} MiB")


def sync_hog(request: Request) -> Response:
    return PlainTextResponse(f"allocated {allocate(256)} MiB")


starlette_app = Starlette(
    routes=[
        Route("/neighbour", neighbour),
        Route("/sync-neighbour", sync_neighbour),
        Route("/hog", hog),
        Route("/sync-hog", sync_hog),
    ]
)


def _fill(hold: list[bytearray], size: int) -> None:
    """Allocate ``size``-byte chunks into ``hold`` until one is refused."""
    with contextlib.suppress(MemoryError):
        while True:
            hold.append(bytearray(size))


async def grace_app(scope: Any, receive: Any, send: Any) -> None:
    """Trips its budget, swallows the error, uses up the grace allowance too, then awaits a
    future resolved by a callback: the event loop's own allocations for waking the task
    (run in the task's context, so charged to its budget) must not be refused."""
    if scope["type"] != "http":
        return
    loop = asyncio.get_running_loop()
    woken = loop.create_future()
    loop.call_soon(woken.set_result, None)  # scheduled now: the await below allocates nothing
    # With a callback already there, the loop's machinery allocates (a list of callbacks)
    # when the task waits for the future.
    woken.add_done_callback(lambda _: None)
    hold: list[bytearray] = []
    for size in (65536, 4096, 256, 16):  # up to the limit, then through the grace
        _fill(hold, size)
        _fill(hold, size)
    await woken
    await text(send, b"still here")  # refused (tripped): nea answers 500
