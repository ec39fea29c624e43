"""The driver on uvloop (what `--loop auto` picks when installed): a smoke run of the essentials."""

from __future__ import annotations

import asyncio

import httpx
import uvloop
from tests.conftest import run_server

from nea._types import Receive, Scope, Send


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body[:4], "more_body": True})
    await send({"type": "http.response.body", "body": body[4:]})


def test_runs_on_uvloop(backend: str) -> None:
    uvloop.run(scenario(backend))


async def scenario(backend: str) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    big = b"y" * (2 * 1024 * 1024)
    async with run_server(echo, http=backend) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            assert (await client.post("/", content=big)).content == big
        async with srv.connect() as conn:
            await conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" * 3)
            bodies = [(await conn.read_response()).body for _ in range(3)]
    assert bodies == [b"hello"] * 3
