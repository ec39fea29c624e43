"""ASGI apps the test client tests drive: a Starlette app with lifespan, a raw ASGI app
that trips after its response started, and a lifespan recorder."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nea._types import Receive, Scope, Send

MiB = 1024 * 1024
HOG_BYTES = 64 * MiB


class Gate:
    """Lets a test hold a request inside the app: ``entered`` is set when the handler
    runs, the handler returns once ``release`` is set (threading events, so a sync test
    can use them across the client's portal thread)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


def make_app(events: list[str] | None = None, gate: Gate | None = None) -> Starlette:
    log = events if events is not None else []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        log.append("startup")
        yield {"greeting": "hello"}
        log.append("shutdown")

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "root_path": request.scope["root_path"],
                "header": request.headers.get("x-test"),
                "body": body.decode(),
                "client": list(request.scope["client"]),
                "budget": request.scope["extensions"]["nea.budget"].limit,
            }
        )

    async def greeting(request: Request) -> Response:
        return PlainTextResponse(request.state.greeting)

    async def hog(request: Request) -> Response:
        data = bytearray(HOG_BYTES)
        return PlainTextResponse(str(len(data)))

    async def small(request: Request) -> Response:
        data = bytearray(MiB)
        return PlainTextResponse(str(len(data)))

    def boom(request: Request) -> Response:
        raise ValueError("boom")

    async def slow(request: Request) -> Response:
        assert gate is not None
        gate.entered.set()
        await anyio.to_thread.run_sync(gate.release.wait)
        return PlainTextResponse("slow")

    return Starlette(
        routes=[
            Route("/echo/{rest:path}", echo, methods=["GET", "POST"]),
            Route("/greeting", greeting),
            Route("/hog", hog),
            Route("/small", small),
            Route("/boom", boom),
            Route("/slow", slow),
        ],
        lifespan=lifespan,
    )


async def trips_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    """Starts a streamed response, then allocates far past any test budget."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    data = bytearray(HOG_BYTES)
    await send({"type": "http.response.body", "body": bytes(data[:4]), "more_body": False})


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that only speaks http and returns on any other scope."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def raises_on_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that only speaks http and raises on any other scope."""
    if scope["type"] != "http":
        raise LookupError(f"expected an http scope, got {scope['type']!r}")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
