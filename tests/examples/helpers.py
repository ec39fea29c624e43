"""Helpers for the example tests: load an example by path, serve an app on a real socket.

Tests marked ``needs_integration`` run an example under the real ``nea.Server`` (or the
``nea`` CLI) with budgets: they need the server ([1/5]), the meter ([2/5]) and admission
([3/5]) together. Everything else runs against any ASGI app through
``httpx.ASGITransport`` or uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
# Generous: a server that has not stopped by then is a bug the test should show.
SHUTDOWN_TIMEOUT_SECONDS = 10.0
STARTUP_TIMEOUT_SECONDS = 10.0


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` afresh under a private module name."""
    module_name = f"_nea_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load example {name!r} from {EXAMPLES_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def listening_socket() -> socket.socket:
    """A socket already listening on 127.0.0.1, free port: clients may connect at once."""
    return socket.create_server(("127.0.0.1", 0))


@contextlib.asynccontextmanager
async def nea_server(app: Any, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` with ``nea.Server`` in this event loop; yield its base URL.

    ``options`` are ``nea.Config`` fields (``budget``, ``slots``, ...). The socket is bound
    here and handed to ``serve(sockets=...)``; ``wait_started`` raises if serving failed.
    """
    import nea

    with listening_socket() as sock:
        port = sock.getsockname()[1]
        options.setdefault("access_log", False)
        server = nea.Server(nea.Config(app=app, lifespan="on", **options))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await asyncio.wait_for(server.wait_started(), STARTUP_TIMEOUT_SECONDS)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.shutdown()
            await asyncio.wait_for(task, SHUTDOWN_TIMEOUT_SECONDS)


@contextlib.asynccontextmanager
async def uvicorn_server(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop on a pre-bound socket."""
    import uvicorn

    with listening_socket() as sock:
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, SHUTDOWN_TIMEOUT_SECONDS)
