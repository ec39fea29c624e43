"""A proxy: every request fetches one upstream URL with httpx and forwards the answer.

The upstream's status, ``content-type`` and body are passed on. When the upstream
cannot be reached (connection refused, DNS failure, timeout, broken response) the
answer is ``502 Bad Gateway`` with a text body naming the upstream and the error.

The upstream defaults to ``http://127.0.0.1:8000/pyproject.toml`` (what
``examples/static_file.py`` serves on nea's default port); set ``NEA_PROXY_UPSTREAM`` to
change it. One ``httpx.AsyncClient`` is shared by all requests; it is opened and closed
by the app's lifespan, so run the proxy with lifespan on (the default ``auto`` is fine).

Run it next to the static file example::

    nea --app-dir examples static_file:app --port 8000 &
    NEA_PROXY_UPSTREAM=http://127.0.0.1:8000/pyproject.toml \\
        nea --app-dir examples proxy:app --port 8001
    curl -i localhost:8001/
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

DEFAULT_UPSTREAM = "http://127.0.0.1:8000/pyproject.toml"
UPSTREAM_ENV = "NEA_PROXY_UPSTREAM"
# Seconds; an upstream slower than this is as good as unreachable for a proxy.
UPSTREAM_TIMEOUT_SECONDS = 10.0


def create_app(upstream: str, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """Build the proxy for ``upstream``; ``transport`` lets tests plug in a fake upstream."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            transport=transport, timeout=UPSTREAM_TIMEOUT_SECONDS
        ) as client:
            app.state.client = client
            yield

    async def forward(request: Request) -> Response:
        client: httpx.AsyncClient | None = getattr(request.app.state, "client", None)
        if client is None:
            raise RuntimeError(
                "proxy example: no upstream client; the app's lifespan did not run "
                "(serve it with --lifespan auto or on)"
            )
        try:
            upstream_response = await client.get(upstream)
        except httpx.HTTPError as error:
            detail = str(error) or type(error).__name__
            return PlainTextResponse(
                f"Bad Gateway: upstream {upstream} unreachable: {detail}", status_code=502
            )
        headers = {}
        content_type = upstream_response.headers.get("content-type")
        if content_type is not None:
            headers["content-type"] = content_type
        return Response(
            upstream_response.content, status_code=upstream_response.status_code, headers=headers
        )

    return Starlette(routes=[Route("/{path:path}", forward)], lifespan=lifespan)


UPSTREAM = os.environ.get(UPSTREAM_ENV, DEFAULT_UPSTREAM)
app = create_app(UPSTREAM)
