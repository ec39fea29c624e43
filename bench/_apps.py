"""The ASGI apps that the meter and region benchmarks serve (one definition for all of them).

Servers import this module by name (``--app-dir bench`` and ``_apps:ATTRIBUTE``):

- ``hello``: raw ASGI, a 13-byte text body, any path;
- ``app``: Starlette with ``/json`` (a ~20 KB ``JSONResponse``), ``/text`` (a 13-byte
  ``PlainTextResponse``), ``/echo`` (``POST``: the body back), ``/work`` (1 MiB allocated
  in 1 KiB blocks and freed) and ``/hog`` (24 MiB: past a 16 MiB budget);
- ``plain`` / ``plain_text`` / ``plain_echo``: Starlette with the same JSON / text / echo
  endpoint on ``/``;
- ``ws_echo``: a raw ASGI WebSocket echo (other scopes: ``hello``);
- ``metered`` / ``metered_hello`` / ``metered_text`` / ``metered_echo``: ``plain`` /
  ``hello`` / ``plain_text`` / ``plain_echo`` with a 16 MiB ``nea.budget`` entered around
  every request by ``BudgetPerRequest``, a pure-ASGI wrapper (the mechanism nea's own
  server uses), for serving metered apps from other servers such as uvicorn.

It imports only nea's public API and Starlette; importing nea installs no allocator hooks
(the first budget does). It must not import the bench scripts.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import nea

BUDGET = "16MiB"

ITEMS = [
    {"id": i, "name": f"item {i}", "price": i * 1.25, "tags": ["a", "b", "c"]} for i in range(280)
]


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def items(request: Request) -> Response:
    return JSONResponse({"items": ITEMS})


async def work(request: Request) -> Response:
    data = [bytes(1024) for _ in range(1024)]  # 1 MiB in 1 KiB blocks, freed at the end
    return PlainTextResponse(str(len(data)))


async def hog(request: Request) -> Response:
    keep = [bytearray(1024 * 1024) for _ in range(24)]  # 24 MiB: past a 16 MiB budget
    return PlainTextResponse(str(len(keep)))


async def text(request: Request) -> Response:
    return PlainTextResponse("Hello, world!")


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


app = Starlette(
    routes=[
        Route("/json", items),
        Route("/text", text),
        Route("/echo", echo, methods=["POST"]),
        Route("/work", work),
        Route("/hog", hog),
    ]
)
plain = Starlette(routes=[Route("/", items)])
plain_text = Starlette(routes=[Route("/", text)])
plain_echo = Starlette(routes=[Route("/", echo, methods=["POST"])])


class BudgetPerRequest:
    """Enter a fresh ``nea.budget(limit)`` around every HTTP request of ``app``."""

    def __init__(self, app: ASGIApp, limit: str) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with nea.budget(self.limit):
            await self.app(scope, receive, send)


metered = BudgetPerRequest(plain, BUDGET)
metered_hello = BudgetPerRequest(hello, BUDGET)
metered_text = BudgetPerRequest(plain_text, BUDGET)
metered_echo = BudgetPerRequest(plain_echo, BUDGET)


async def ws_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """``/``: a WebSocket that echoes every message (``bench/websocket.py``)."""
    if scope["type"] == "lifespan":
        await hello(scope, receive, send)
        return
    if scope["type"] != "websocket":
        await hello(scope, receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        message["type"] = "websocket.send"
        await send(message)
