"""MemoryBudgetMiddleware under real servers on real sockets: a hog trips with 500 while
its neighbours succeed; a trip after the response started aborts the connection."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from .server_app import make_app
from .servers import SERVERS, client, granian_installed

NEIGHBOURS = 16


def serve(server: str) -> Any:
    if server == "granian" and not granian_installed():
        pytest.skip("granian is not installed")
    return SERVERS[server](make_app())


@pytest.mark.asyncio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_hog_trips_while_neighbours_succeed(meter: str, server: str) -> None:
    with serve(server) as target:
        async with client(target) as http:
            hogs = [http.get("/hog"), http.get("/sync-hog")]
            neighbours = [
                http.get("/neighbour" if i % 2 else "/sync-neighbour") for i in range(NEIGHBOURS)
            ]
            if meter == "native":
                responses = await asyncio.gather(*hogs, *neighbours)
            else:
                # tracemalloc measures the whole process, so concurrent requests would see
                # the hog's memory: run the phases one after the other.
                responses = [*await asyncio.gather(*hogs), *await asyncio.gather(*neighbours)]
    for response in responses[:2]:
        assert response.status_code == 500
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.text == "Internal Server Error: Out of Memory"
    assert [r.status_code for r in responses[2:]] == [200] * NEIGHBOURS
    assert all(r.text == "ok 5000" for r in responses[2:])


@pytest.mark.asyncio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_trip_after_start_aborts_the_connection(meter: str, server: str) -> None:
    with serve(server) as target:
        async with client(target) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/stream")
            # The server is fine afterwards.
            assert (await http.get("/neighbour")).status_code == 200
