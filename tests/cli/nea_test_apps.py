"""ASGI apps the CLI tests serve in a real ``nea`` subprocess (``--app-dir tests/cli``)."""

from __future__ import annotations

import os
from typing import Any

TEXT = [(b"content-type", b"text/plain")]


async def _lifespan_ok(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def pid_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with the serving process id."""
    if scope["type"] == "lifespan":
        await _lifespan_ok(receive, send)
        return
    body = str(os.getpid()).encode()
    headers = [*TEXT, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def held_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Streams "first part received" after the first body chunk, then waits for the rest.

    The test controls when the request finishes by sending the rest of the body, so it can
    stop the server while this request is in flight, without sleeping.
    """
    if scope["type"] == "lifespan":
        await _lifespan_ok(receive, send)
        return
    message = await receive()
    received = len(message.get("body", b""))
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"first part received\n", "more_body": True})
    while message.get("more_body", False):
        message = await receive()
        received += len(message.get("body", b""))
    await send({"type": "http.response.body", "body": f"done {received}\n".encode()})


async def failing_startup_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reports lifespan startup failure."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    raise RuntimeError("never served")


async def env_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``GET /NAME`` with the value of the environment variable NAME (or -)."""
    if scope["type"] == "lifespan":
        await _lifespan_ok(receive, send)
        return
    body = os.environ.get(scope["path"].lstrip("/"), "-").encode()
    headers = [*TEXT, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Prints ``body_app: reading PATH`` once it runs, then reads the whole body and answers
    with its length: a test sends part of the body, waits for the line, and so knows the
    request is in the app before it stops the server."""
    if scope["type"] == "lifespan":
        await _lifespan_ok(receive, send)
        return
    print(f"body_app: reading {scope['path']} in pid {os.getpid()}", flush=True)
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": f"received {received}\n".encode()})
