"""Nea's out-of-memory example: ``GET /N`` allocates N kb and says so.

The transcript from Nea's README, served by nea with a 512 KiB budget per request
(the size of Nea's per-request region)::

    $ curl -i localhost:8080/10
    HTTP/1.1 200 OK
    content-type: text/html
    ...
    successfully allocated 10kb of memory

    $ curl -i localhost:8080/1000
    HTTP/1.1 500 Internal Server Error
    content-type: text/plain; charset=utf-8
    ...
    Internal Server Error: Out of Memory

Like Nea, a kb here is 1000 bytes. The handler really allocates ``N × 1000`` bytes and
keeps them alive until the response is built, so the request's budget sees every byte;
when they do not fit, the allocation itself raises ``MemoryError`` and nea answers
``500 Internal Server Error: Out of Memory``. Under a server without budgets (uvicorn)
the allocation simply succeeds.

Run it with either of::

    nea --app-dir examples oom:app --port 8080 --budget 512KiB
    python examples/oom.py

A path that is not a whole number of kb gets ``404``; a number too large to be a size
at all gets ``400``. It is a plain ASGI app with no dependencies.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# Nea's kb is decimal: 1 kb = 1000 bytes.
KB_BYTES = 1000
# Nea's per-request region is 512 KiB; the same budget reproduces its transcript.
BUDGET = "512KiB"
PORT = 8080
# Beyond this no object can be that large (CPython sizes are Py_ssize_t).
MAX_KB = sys.maxsize // KB_BYTES
TEXT_PLAIN = "text/plain; charset=utf-8"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        # Only HTTP is served; anything else (websocket) is refused by ending the call.
        return
    kb_text = scope["path"].removeprefix("/")
    if not (kb_text.isascii() and kb_text.isdigit()):
        await _respond(send, 404, TEXT_PLAIN, b"Not Found: try /10 (kb to allocate)")
        return
    # Check the length before int(): CPython refuses to parse over 4300 digits.
    if len(kb_text) > len(str(MAX_KB)) or int(kb_text) > MAX_KB:
        await _respond(send, 400, TEXT_PLAIN, b"Bad Request: too many kb to be a size")
        return
    kb = int(kb_text)
    # The allocation that the budget meters: N kb, alive until the body is built below.
    memory = bytearray(kb * KB_BYTES)
    body = f"successfully allocated {len(memory) // KB_BYTES}kb of memory".encode()
    await _respond(send, 200, "text/html", body)


async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up; answer the protocol so `--lifespan on` works too.
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


if __name__ == "__main__":
    import nea

    nea.run(app, port=PORT, budget=BUDGET)
