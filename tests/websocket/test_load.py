"""Load on the WebSocket path: a message rate held for a while, and a FastAPI route.

``test_message_rate`` sends 1000 messages per second for ``NEA_WS_SOAK_SECONDS`` (1 in the
suite; ``NEA_WS_SOAK_SECONDS=10`` is the full 10-second run), each echoed in order, and
fails if the echoes fall behind that rate.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from tests.conftest import run_server
from websockets.asyncio.client import connect

from .test_websocket import echo

pytestmark = pytest.mark.asyncio

RATE_PER_SECOND = 1000


async def test_message_rate(backend: str, ws_backend: str) -> None:
    seconds = float(os.environ.get("NEA_WS_SOAK_SECONDS", "1"))
    total = int(RATE_PER_SECOND * seconds)
    batch = 10  # paced in batches of 10 every 10 ms: 1000 messages per second
    async with (
        run_server(echo, http=backend, ws=ws_backend) as srv,
        connect(f"ws://{srv.host}:{srv.port}/", compression=None) as ws,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def produce() -> None:
            for first in range(0, total, batch):
                # A rate limiter, not synchronisation: wait for this batch's send time.
                delay = started + first / RATE_PER_SECOND - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                for n in range(first, min(first + batch, total)):
                    await ws.send(f"message {n}")

        producer = asyncio.create_task(produce())
        worst_lag = 0.0
        for n in range(total):
            assert await ws.recv() == f"message {n}"
            worst_lag = max(worst_lag, loop.time() - (started + n / RATE_PER_SECOND))
        await producer
        elapsed = loop.time() - started
    # Every echo arrived, in order, and the server kept up with the rate.
    assert elapsed < seconds + 1.0, f"{total} echoes took {elapsed:.2f}s"
    assert worst_lag < 1.0, f"an echo came {worst_lag:.3f}s after its send time"


async def test_fastapi_websocket_route(backend: str, ws_backend: str) -> None:
    app = FastAPI()

    @app.websocket("/ws/{name}")
    async def greet(websocket: WebSocket, name: str) -> None:
        await websocket.accept()
        while True:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnect:
                return
            await websocket.send_json({"name": name, "text": text})

    async with (
        run_server(app, http=backend, ws=ws_backend) as srv,
        connect(f"ws://{srv.host}:{srv.port}/ws/ada") as ws,
    ):
        await ws.send("hi")
        assert await ws.recv() == '{"name":"ada","text":"hi"}'
