"""The Starlette app the real-server tests serve (importable by name for granian).

``/neighbour`` and ``/sync-neighbour`` allocate about 100 KB; ``/hog`` and ``/sync-hog`` grow
towards 48 MiB in 1 MiB steps under an 8 MiB budget; ``/stream`` trips after its first chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from nea.middleware import MemoryBudgetMiddleware

MiB = 1024 * 1024


def grow(limit_bytes: int = 48 * MiB) -> int:
    chunks = [bytearray(MiB) for _ in range(limit_bytes // MiB)]
    return len(chunks)


async def neighbour(request: Request) -> Response:
    data = [b"%d" % i for i in range(5000)]  # about 100 KB of small objects
    await asyncio.sleep(0.01)  # a workload that awaits, so requests overlap
    return PlainTextResponse(f"ok {len(data)}")


def sync_neighbour(request: Request) -> Response:
    data = [b"%d" % i for i in range(5000)]
    return PlainTextResponse(f"ok {len(data)}")


async def hog(request: Request) -> Response:
    return PlainTextResponse(f"allocated {grow()} MiB")


def sync_hog(request: Request) -> Response:
    return PlainTextResponse(f"allocated {grow()} MiB")


async def stream_then_hog(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk\n"
        yield f"{grow()}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")


def make_app() -> Starlette:
    routes = [
        Route("/neighbour", neighbour),
        Route("/sync-neighbour", sync_neighbour),
        Route("/hog", hog),
        Route("/sync-hog", sync_hog),
        Route("/stream", stream_then_hog),
    ]
    return Starlette(routes=routes, middleware=[Middleware(MemoryBudgetMiddleware, budget="8MiB")])


app = make_app()
