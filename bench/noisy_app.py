"""The app served by ``bench/noisy_neighbour.py``: small neighbour requests and a hog.

- ``GET /small``: allocates about 100 KB (100 blocks of 1000 bytes), keeps it alive across
  a 10 ms await (as a handler waiting on a database would), answers ``ok``.
- ``GET /hog``: grows a list of 1 MiB bytearrays towards 2 GiB, yielding to the event loop
  after every step, and answers ``grew to N MiB`` if it ever gets there. Under nea it
  trips its budget after a few steps; elsewhere it grows until memory runs out.

A plain ASGI app, so every server runs exactly the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SMALL_BLOCKS = 100
SMALL_BLOCK_BYTES = 1000
SMALL_AWAIT_SECONDS = 0.010
HOG_STEP_BYTES = 1024 * 1024
HOG_TARGET_BYTES = 2 * 1024**3


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/small":
        blocks = [bytes(SMALL_BLOCK_BYTES) for _ in range(SMALL_BLOCKS)]
        await asyncio.sleep(SMALL_AWAIT_SECONDS)
        body = b"ok" if len(blocks) == SMALL_BLOCKS else b"?"
        await _respond(send, 200, body)
    elif scope["path"] == "/hog":
        chunks: list[bytearray] = []
        while len(chunks) * HOG_STEP_BYTES < HOG_TARGET_BYTES:
            chunks.append(bytearray(HOG_STEP_BYTES))
            await asyncio.sleep(0)
        await _respond(send, 200, f"grew to {len(chunks)} MiB".encode())
    else:
        await _respond(send, 404, b"not found: /small or /hog")


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
