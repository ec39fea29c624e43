"""Serves the project's ``pyproject.toml`` at every path, as ``text/plain``.

The file is found relative to this example (``../pyproject.toml``), so the app works
from any working directory. Starlette's ``FileResponse`` streams it in chunks and sets
``content-length``, ``last-modified`` and ``etag``.

Run it with either of::

    nea --app-dir examples static_file:app
    uvicorn --app-dir examples static_file:app
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


async def pyproject(request: Request) -> FileResponse:
    # TOML has no registered text type that every client shows inline; plain text does.
    return FileResponse(PYPROJECT, media_type="text/plain; charset=utf-8")


app = Starlette(routes=[Route("/{path:path}", pyproject)])
