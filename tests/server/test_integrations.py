"""Starlette and FastAPI apps unchanged, TLS, and proxy headers over real sockets."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trustme
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from tests.conftest import run_server

from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio


async def _plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("plain")


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body()), "path": request.url.path})


async def _stream(request: Request) -> StreamingResponse:
    async def parts():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"part{i} "

    return StreamingResponse(parts())


starlette_app = Starlette(
    routes=[
        Route("/plain", _plain),
        Route("/echo", _echo, methods=["POST"]),
        Route("/stream", _stream),
    ]
)

fastapi_app = FastAPI()


@fastapi_app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


async def test_starlette(backend: str) -> None:
    async with (
        run_server(starlette_app, http=backend, lifespan="on") as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        assert (await client.get("/plain")).text == "plain"
        response = await client.post("/echo", content=b"x" * 100_000)
        assert response.json() == {"size": 100_000, "path": "/echo"}
        assert (await client.get("/stream")).text == "part0 part1 part2 "
        assert (await client.get("/missing")).status_code == 404


async def test_fastapi_sync_endpoint(backend: str) -> None:
    async with (
        run_server(fastapi_app, http=backend, lifespan="on") as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        response = await client.get("/items/5", params={"q": "x"})
    assert response.json() == {"item_id": 5, "q": "x"}


async def report_client(scope: Scope, receive: Receive, send: Send) -> None:
    body = f"{scope['scheme']} {scope['client'][0]}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        (("127.0.0.1",), "https 9.9.9.9"),
        (("10.0.0.1",), "http 127.0.0.1"),
        (("*",), "https 9.9.9.9"),
    ],
)
async def test_proxy_headers_from_trusted_peers_only(
    backend: str, allow: tuple[str, ...], expected: str
) -> None:
    headers = {"X-Forwarded-For": "9.9.9.9", "X-Forwarded-Proto": "https"}
    async with (
        run_server(report_client, http=backend, forwarded_allow_ips=allow) as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        assert (await client.get("/", headers=headers)).text == expected


async def test_proxy_headers_off_ignores_them(backend: str) -> None:
    headers = {"X-Forwarded-For": "9.9.9.9", "X-Forwarded-Proto": "https"}
    async with (
        run_server(report_client, http=backend, proxy_headers=False) as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        assert (await client.get("/", headers=headers)).text == "http 127.0.0.1"


async def test_tls(backend: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    options = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile), "proxy_headers": False}
    async with run_server(report_client, http=backend, **options) as srv:
        assert srv.url.startswith("https://")
        async with httpx.AsyncClient(base_url=srv.url, verify=client_context) as client:
            assert (await client.get("/")).text == "https 127.0.0.1"
