"""The middleware's WebSocket pool under another server (uvicorn, with its wsproto backend):
a connection's live memory trips its own budget (1011), a neighbour carries on, a full
pool is denied through the denial-response extension (503)."""

from __future__ import annotations

import pytest
from tests.websocket.test_budgets import keeper
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nea.middleware import MemoryBudgetMiddleware

from .servers import run_uvicorn

pytestmark = pytest.mark.asyncio


async def test_budget_trip_under_uvicorn(native: str) -> None:
    app = MemoryBudgetMiddleware(keeper, ws_budget="2MiB", ws_slots=2)
    with run_uvicorn(app, ws="wsproto") as target:
        url = target.url.replace("http://", "ws://") + "/"
        async with connect(url) as neighbour, connect(url) as hog:
            await hog.send("keep")
            assert await hog.recv() == "kept 1 MiB"
            await hog.send("keep")
            with pytest.raises(ConnectionClosed) as info:
                await hog.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011
            await neighbour.send("still")
            assert await neighbour.recv() == "still"
            # The hog's slot is back only once its handler returned; the neighbour holds one.
            async with connect(url) as third:
                await third.send("x")
                assert await third.recv() == "x"
                with pytest.raises(InvalidStatus) as denied:
                    async with connect(url):
                        pass
                assert denied.value.response.status_code == 503
    assert app.ws_admission is not None and app.ws_admission.tripped == 1
