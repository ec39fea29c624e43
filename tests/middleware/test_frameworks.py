"""MemoryBudgetMiddleware inside Starlette and FastAPI, driven in-process through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from nea import ConfigError, current_budget
from nea.middleware import MemoryBudgetMiddleware

MiB = 1024 * 1024
OOM = "Internal Server Error: Out of Memory"


def grow(limit_bytes: int = 48 * MiB) -> int:
    """Allocate 1 MiB at a time until ``limit_bytes`` (a budget stops it long before)."""
    chunks = [bytearray(MiB) for _ in range(limit_bytes // MiB)]
    return len(chunks)


async def small(request: Request) -> Response:
    request_budget = request.scope["extensions"]["nea.budget"]
    assert current_budget() is request_budget
    data = [str(i) for i in range(2000)]
    return PlainTextResponse(f"small {len(data)} limit={request_budget.limit}")


async def hog(request: Request) -> Response:
    return PlainTextResponse(f"allocated {grow()} MiB")


def sync_hog(request: Request) -> Response:
    return PlainTextResponse(f"allocated {grow()} MiB")


async def stream_then_hog(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk\n"
        yield f"{grow()}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")


ROUTES = [
    Route("/small", small),
    Route("/hog", hog),
    Route("/sync-hog", sync_hog),
    Route("/stream", stream_then_hog),
]


def client(app: Any, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def assert_out_of_memory(response: httpx.Response) -> None:
    assert response.status_code == 500
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["connection"] == "close"
    assert response.text == OOM


@pytest.mark.asyncio
async def test_starlette_middleware_list(meter: str) -> None:
    app = Starlette(routes=ROUTES, middleware=[Middleware(MemoryBudgetMiddleware, budget="8MiB")])
    async with client(app) as http:
        ok = await http.get("/small")
        assert ok.status_code == 200
        assert ok.text == f"small 2000 limit={8 * MiB}"
        assert_out_of_memory(await http.get("/hog"))
        assert_out_of_memory(await http.get("/sync-hog"))
        assert (await http.get("/small")).status_code == 200


@pytest.mark.asyncio
async def test_starlette_add_middleware(meter: str) -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(MemoryBudgetMiddleware, budget=8 * MiB, slots=4)
    async with client(app) as http:
        assert (await http.get("/small")).status_code == 200
        assert_out_of_memory(await http.get("/hog"))


@pytest.mark.asyncio
async def test_trip_while_streaming_aborts_instead_of_finishing_the_body(meter: str) -> None:
    app = Starlette(routes=ROUTES, middleware=[Middleware(MemoryBudgetMiddleware, budget="8MiB")])
    async with client(app) as http:
        with pytest.raises(MemoryError):
            await http.get("/stream")


def fastapi_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(MemoryBudgetMiddleware, budget="8MiB")

    @app.get("/async")
    async def async_endpoint(mib: int) -> dict[str, Any]:
        return {"allocated": grow(mib * MiB), "budget": current_budget() is not None}

    @app.get("/def")
    def def_endpoint(mib: int) -> dict[str, Any]:
        # Runs in a worker thread; the budget follows through the copied context.
        return {"allocated": grow(mib * MiB), "budget": current_budget() is not None}

    return app


@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", ["/async", "/def"])
async def test_fastapi_endpoints(meter: str, endpoint: str) -> None:
    async with client(fastapi_app()) as http:
        ok = await http.get(endpoint, params={"mib": 2})
        assert ok.status_code == 200
        assert ok.json() == {"allocated": 2, "budget": True}
        assert_out_of_memory(await http.get(endpoint, params={"mib": 48}))
        assert (await http.get(endpoint, params={"mib": 1})).status_code == 200


@pytest.mark.asyncio
async def test_wraps_any_asgi_app(meter: str) -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        size = int(scope["path"].strip("/"))
        body = b"x" * len(bytearray(size * MiB))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body[:5]})

    middleware = MemoryBudgetMiddleware(bare, budget="8MiB", slots=2)
    async with client(middleware) as http:
        assert (await http.get("/1")).text == "xxxxx"
        assert_out_of_memory(await http.get("/100"))
    stats = middleware.statistics()
    assert (stats.slots, stats.busy, stats.served, stats.tripped) == (2, 0, 2, 1)


def test_bad_options_fail_when_the_middleware_is_built() -> None:
    with pytest.raises(ConfigError, match=r"budget: unknown size unit .parsecs."):
        MemoryBudgetMiddleware(small, budget="32 parsecs")
    with pytest.raises(ConfigError, match="slots"):
        MemoryBudgetMiddleware(small, slots=0)
