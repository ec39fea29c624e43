"""examples/fastapi_app.py: an unchanged FastAPI app; under nea a hog fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import pytest
import pytest_asyncio

from .helpers import load_example, nea_server

OUT_OF_MEMORY = "Internal Server Error: Out of Memory"


@pytest.fixture(scope="module")
def fastapi_example() -> ModuleType:
    return load_example("fastapi_app")


@pytest_asyncio.fixture
async def client(fastapi_example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fastapi_example.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        yield client


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "endpoint"), [("/alloc", "async def"), ("/alloc-sync", "def")])
async def test_endpoints_allocate_what_the_query_says(
    client: httpx.AsyncClient, path: str, endpoint: str
) -> None:
    response = await client.get(path, params={"kb": 100})
    assert response.status_code == 200
    assert response.json() == {"allocated_kb": 100, "endpoint": endpoint}


@pytest.mark.asyncio
@pytest.mark.parametrize("kb", ["-1", "ten", "1000000001"])
async def test_a_bad_kb_is_a_validation_error(client: httpx.AsyncClient, kb: str) -> None:
    response = await client.get("/alloc", params={"kb": kb})
    assert response.status_code == 422


@pytest.mark.asyncio
async def test_index(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.json() == {"hello": "nea"}


@pytest.mark.needs_integration
@pytest.mark.asyncio
async def test_hogs_trip_alone_while_neighbours_succeed(fastapi_example: ModuleType) -> None:
    # 8 MiB per request: a 100 kb neighbour fits many times, a 100 MB hog never does.
    async with (
        nea_server(fastapi_example.app, budget="8MiB", slots=16) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        hog_paths = ["/alloc", "/alloc-sync"] * 2
        neighbour_paths = ["/alloc", "/alloc-sync"] * 6
        hogs = [client.get(path, params={"kb": 100_000}) for path in hog_paths]
        neighbours = [client.get(path, params={"kb": 100}) for path in neighbour_paths]
        responses = await asyncio.gather(*hogs, *neighbours)
        for response in responses[: len(hogs)]:
            assert response.status_code == 500
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert response.text == OUT_OF_MEMORY
        for response in responses[len(hogs) :]:
            assert response.status_code == 200
            assert response.json()["allocated_kb"] == 100
        # After the trips the server is whole: the same endpoints still serve.
        for path in ("/alloc", "/alloc-sync"):
            after = await client.get(path, params={"kb": 100})
            assert after.status_code == 200


@pytest.mark.asyncio
async def test_hogs_trip_alone_under_the_middleware(fastapi_example: ModuleType) -> None:
    """Budgets through ``MemoryBudgetMiddleware`` (any server): the same isolation."""
    from nea.middleware import MemoryBudgetMiddleware

    app = MemoryBudgetMiddleware(fastapi_example.app, budget="8MiB", slots=16)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        paths = ["/alloc", "/alloc-sync"] * 2
        hogs = [client.get(path, params={"kb": 100_000}) for path in paths]
        neighbours = [client.get(path, params={"kb": 100}) for path in paths * 3]
        responses = await asyncio.gather(*hogs, *neighbours)
    assert [(r.status_code, r.text) for r in responses[: len(hogs)]] == [
        (500, OUT_OF_MEMORY)
    ] * len(hogs)
    assert [r.status_code for r in responses[len(hogs) :]] == [200] * len(neighbours)
