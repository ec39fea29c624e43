"""The WebSocket pool: a connection's live memory is charged to its own budget for its
whole life, a trip closes only that connection (1011), a full pool denies (503), and the
middleware gives WebSocket scopes the same budgets."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tests.conftest import run_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nea._types import Receive, Scope, Send
from nea.middleware import MemoryBudgetMiddleware

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024


async def keeper(scope: Scope, receive: Receive, send: Send) -> None:
    """Keeps 1 MiB per ``keep`` message for the connection's life; echoes the rest."""
    kept: list[bytearray] = []
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text == "keep":
            kept.append(bytearray(MiB))
            text = f"kept {len(kept)} MiB"
        elif text == "budget":
            text = str(scope["extensions"]["nea.budget"].limit)
        await send({"type": "websocket.send", "text": text})


def url(srv: Any) -> str:
    return f"ws://{srv.host}:{srv.port}/"


async def test_live_memory_trips_its_own_connection_only(
    native: str, backend: str, ws_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nea.error"):
        async with (
            run_server(keeper, http=backend, ws=ws_backend, ws_budget="4MiB", ws_slots=4) as srv,
            connect(url(srv)) as neighbour,
            connect(url(srv)) as hog,
        ):
            for n in range(1, 4):
                await hog.send("keep")
                assert await hog.recv() == f"kept {n} MiB"  # charged across messages
            await hog.send("keep")  # the fourth MiB crosses the 4 MiB budget
            with pytest.raises(ConnectionClosed) as info:
                await hog.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011
            await neighbour.send("hello")
            assert await neighbour.recv() == "hello"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("out of memory: WebSocket / exceeded its budget of 4.0 MiB")


async def test_full_pool_denies_503_and_holds_no_request_slot(
    backend: str, ws_backend: str
) -> None:
    async with run_server(keeper, http=backend, ws=ws_backend, ws_slots=1, slots=1) as srv:
        async with connect(url(srv)) as first:
            with pytest.raises(InvalidStatus) as info:
                async with connect(url(srv)):
                    pass
            assert info.value.response.status_code == 503
            await first.send("still")
            assert await first.recv() == "still"
        async with connect(url(srv)) as again:  # the slot came back
            await again.send("x")
            assert await again.recv() == "x"


async def test_middleware_gives_websockets_a_budget(
    native: str, backend: str, ws_backend: str
) -> None:
    app = MemoryBudgetMiddleware(keeper, ws_budget="2MiB", ws_slots=2)
    async with run_server(app, http=backend, ws=ws_backend, ws_budget="64MiB") as srv:
        async with connect(url(srv)) as ws:
            await ws.send("budget")
            assert await ws.recv() == str(2 * MiB)
            await ws.send("keep")
            assert await ws.recv() == "kept 1 MiB"
            await ws.send("keep")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        assert app.ws_admission is not None and app.ws_admission.tripped == 1


async def test_middleware_without_ws_budget_passes_websockets_through(
    backend: str, ws_backend: str
) -> None:
    app = MemoryBudgetMiddleware(keeper)
    async with (
        run_server(app, http=backend, ws=ws_backend, ws_budget="3MiB") as srv,
        connect(url(srv)) as ws,
    ):
        await ws.send("budget")
        assert await ws.recv() == str(3 * MiB)  # the server's budget, not the middleware's
