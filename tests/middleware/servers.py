"""Run an ASGI app under a real server and yield where to reach it.

uvicorn and hypercorn run in a background thread on a socket the test bound itself (port 0),
so no wait is needed: connections queue in the listen backlog until the server accepts them.
granian (Rust, its own worker processes) runs as a subprocess on a Unix socket; the wait is
for its "Started worker-1" log line, bounded by a timeout. Stopping is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

STOP_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 30.0
HERE = Path(__file__).parent


@dataclass(frozen=True)
class Target:
    """Where a running server listens: a base URL, and a Unix socket path if it uses one."""

    url: str
    uds: str | None = None


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def run_uvicorn(app: Any, ws: str = "none") -> Iterator[Target]:
    import uvicorn

    sock = _listening_socket()
    config = uvicorn.Config(
        app, lifespan="off", ws=ws, log_config=None, log_level="warning", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield Target(f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_SECONDS)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("uvicorn did not stop within the timeout")


@contextlib.contextmanager
def run_hypercorn(app: Any) -> Iterator[Target]:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = _listening_socket()
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn takes ownership of the fd
    config.accesslog = None
    started = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        control["stop"] = lambda: stop.set()
        control["loop"] = asyncio.get_running_loop()
        started.set()
        await serve(app, config, shutdown_trigger=stop.wait, mode="asgi")

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(STOP_TIMEOUT_SECONDS):
        raise RuntimeError("hypercorn's event loop did not start")
    try:
        yield Target(f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        control["loop"].call_soon_threadsafe(control["stop"])
        thread.join(STOP_TIMEOUT_SECONDS)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("hypercorn did not stop within the timeout")


@contextlib.contextmanager
def run_granian(app: Any) -> Iterator[Target]:
    """Serve ``server_app:app`` (granian imports the app by name; ``app`` is ignored)."""
    with tempfile.TemporaryDirectory() as tmp:
        uds = os.path.join(tmp, "granian.sock")
        command = [
            *(sys.executable, "-m", "granian", "--interface", "asgi", "--uds", uds),
            *("--workers", "1", "--no-access-log", "--working-dir", str(HERE), "server_app:app"),
        ]
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NEA_METER": _current_meter()},
        )
        listening = threading.Event()
        output: list[str] = []

        def read_output() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                if "Started worker-1" in line:
                    listening.set()

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        try:
            if not listening.wait(START_TIMEOUT_SECONDS):
                raise RuntimeError("granian did not start listening:\n" + "".join(output))
            yield Target("http://granian", uds)
        finally:
            proc.terminate()
            proc.wait(STOP_TIMEOUT_SECONDS)
            reader.join(STOP_TIMEOUT_SECONDS)
            if proc.stdout is not None:
                proc.stdout.close()


def _current_meter() -> str:
    from nea.meter import backend

    return backend()


def granian_installed() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


SERVERS: dict[str, Callable[[Any], contextlib.AbstractContextManager[Target]]] = {
    "uvicorn": run_uvicorn,
    "hypercorn": run_hypercorn,
    "granian": run_granian,
}


def client(target: Target) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=target.uds) if target.uds else None
    return httpx.AsyncClient(base_url=target.url, transport=transport, timeout=30)
