"""A small Starlette application: plain text, a ~20 KB JSON document and a POST echo.

Run it with ``nea --app-dir examples starlette_app:app``. The benchmark serves it too.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

# 240 records of ~85 bytes each (compact JSON): a body of about 20 KB, like a list endpoint.
ITEMS = [
    {
        "id": i,
        "name": f"item-{i:04d}",
        "price": round(i * 1.25, 2),
        "tags": ["alpha", "beta", "gamma"][: 1 + i % 3],
        "in_stock": i % 2 == 0,
    }
    for i in range(240)
]


async def plaintext(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


async def json_items(request: Request) -> JSONResponse:
    return JSONResponse({"count": len(ITEMS), "items": ITEMS})


async def echo(request: Request) -> Response:
    body = await request.body()
    content_type = request.headers.get("content-type", "application/octet-stream")
    return Response(body, media_type=content_type)


app = Starlette(
    routes=[
        Route("/", plaintext),
        Route("/plaintext", plaintext),
        Route("/json", json_items),
        Route("/echo", echo, methods=["POST"]),
    ]
)
