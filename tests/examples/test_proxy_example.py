"""examples/proxy.py: forwards status, content-type and body; 502 when the upstream is gone.

Upstreams are fakes (httpx.MockTransport) or local servers on 127.0.0.1; never the internet.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

import httpx
import pytest
from starlette.applications import Starlette

from .helpers import EXAMPLES_DIR, load_example, nea_server, uvicorn_server

UPSTREAM = "http://upstream.test/data"


@pytest.fixture(scope="module")
def proxy() -> ModuleType:
    return load_example("proxy")


@asynccontextmanager
async def proxy_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client for ``app`` over ASGI, with the app's lifespan entered as a server would."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            yield client


def test_default_upstream_and_env_variable(proxy: ModuleType) -> None:
    assert proxy.DEFAULT_UPSTREAM == "http://127.0.0.1:8000/pyproject.toml"
    assert proxy.UPSTREAM_ENV == "NEA_PROXY_UPSTREAM"


def test_the_env_variable_picks_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEA_PROXY_UPSTREAM", "http://127.0.0.1:1/elsewhere")
    assert load_example("proxy").UPSTREAM == "http://127.0.0.1:1/elsewhere"
    monkeypatch.delenv("NEA_PROXY_UPSTREAM")
    assert load_example("proxy").UPSTREAM == "http://127.0.0.1:8000/pyproject.toml"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (200, "text/csv", b"a,b\n1,2\n"),
        (404, "application/json", b'{"detail":"gone"}'),
        (503, "text/plain; charset=utf-8", b"busy"),
    ],
)
async def test_forwards_status_content_type_and_body(
    proxy: ModuleType, status: int, content_type: str, body: bytes
) -> None:
    requested: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(status, headers={"content-type": content_type}, content=body)

    app = proxy.create_app(UPSTREAM, httpx.MockTransport(upstream))
    async with proxy_client(app) as client:
        response = await client.get("/any/path")
    assert requested == [UPSTREAM]
    assert response.status_code == status
    assert response.headers["content-type"] == content_type
    assert response.content == body


@pytest.mark.asyncio
async def test_an_unreachable_upstream_is_a_bad_gateway(proxy: ModuleType) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = proxy.create_app(UPSTREAM, httpx.MockTransport(refuse))
    async with proxy_client(app) as client:
        response = await client.get("/")
    assert response.status_code == 502
    assert response.text == f"Bad Gateway: upstream {UPSTREAM} unreachable: connection refused"


@pytest.mark.asyncio
async def test_without_lifespan_the_error_says_what_to_do(proxy: ModuleType) -> None:
    app = proxy.create_app(UPSTREAM)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        with pytest.raises(RuntimeError, match="lifespan did not run"):
            await client.get("/")


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
async def test_real_sockets_proxy_a_local_upstream(proxy: ModuleType) -> None:
    static = load_example("static_file")
    async with uvicorn_server(static.app) as upstream_url:
        app = proxy.create_app(upstream_url + "/pyproject.toml")
        async with proxy_client(app) as client:
            response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == (EXAMPLES_DIR.parent / "pyproject.toml").read_bytes()


@pytest.mark.asyncio
async def test_real_sockets_refused_connection_is_a_bad_gateway(proxy: ModuleType) -> None:
    upstream = f"http://127.0.0.1:{_closed_port()}/pyproject.toml"
    app = proxy.create_app(upstream)
    async with proxy_client(app) as client:
        response = await client.get("/")
    assert response.status_code == 502
    assert response.text.startswith(f"Bad Gateway: upstream {upstream} unreachable: ")


@pytest.mark.needs_integration
@pytest.mark.asyncio
async def test_proxy_served_by_nea_from_a_nea_upstream(proxy: ModuleType) -> None:
    static = load_example("static_file")
    async with nea_server(static.app) as upstream_url:
        app = proxy.create_app(upstream_url + "/pyproject.toml")
        async with nea_server(app) as proxy_url, httpx.AsyncClient(base_url=proxy_url) as client:
            response = await client.get("/")
    assert response.status_code == 200
    assert response.content == (EXAMPLES_DIR.parent / "pyproject.toml").read_bytes()
