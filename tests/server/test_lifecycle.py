"""Server lifecycle: lifespan, graceful shutdown, limit_max_requests, app import."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import IO_TIMEOUT_SECONDS, run_server

import nea
from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio


def lifespan_app(fail: bool = False) -> Any:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail:
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = scope["state"]["db"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app.events = events  # type: ignore[attr-defined]
    return app


async def test_lifespan_state_reaches_requests_and_shutdown_runs() -> None:
    app = lifespan_app()
    async with run_server(app, lifespan="on") as srv, httpx.AsyncClient(base_url=srv.url) as client:
        assert (await client.get("/")).text == "connected"
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_lifespan_startup_failure_raises(caplog: pytest.LogCaptureFixture) -> None:
    server = nea.Server(nea.Config(app=lifespan_app(fail=True), port=0, lifespan="on"))
    with pytest.raises(nea.LifespanStartupFailed, match="no db"):
        await server.serve()
    assert any("Application startup failed: no db" in r.getMessage() for r in caplog.records)
    with pytest.raises(nea.NeaError, match="stopped before it started"):
        await server.wait_started()


async def test_lifespan_auto_tolerates_apps_without_lifespan() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with (
        run_server(app, lifespan="auto") as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        assert (await client.get("/")).status_code == 204
    with pytest.raises(nea.LifespanStartupFailed):
        async with run_server(app, lifespan="on"):
            pass


async def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    server = nea.Server(nea.Config(app=app, port=0, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await server.wait_started()
    host, port = server.addresses[0]
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        request = asyncio.create_task(client.get("/"))
        await entered.wait()
        server.shutdown()
        release.set()
        response = await asyncio.wait_for(request, IO_TIMEOUT_SECONDS)
    assert response.text == "done" and response.headers["connection"] == "close"
    await asyncio.wait_for(serving, IO_TIMEOUT_SECONDS)
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)


async def test_graceful_shutdown_timeout_cancels_the_rest() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with run_server(app, timeout_graceful_shutdown=0.1) as srv, srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await entered.wait()
        srv.server.shutdown()
        assert await conn.read_until_close() == b""
    assert cancelled.is_set()


async def test_force_exit_cancels_immediately() -> None:
    entered = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await asyncio.Event().wait()

    async with run_server(app) as srv, srv.connect() as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await entered.wait()
        srv.server.shutdown()
        srv.server.force_exit()
        assert await conn.read_until_close() == b""


async def test_limit_max_requests_stops_the_server(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = nea.Server(nea.Config(app=app, port=0, lifespan="off", limit_max_requests=2))
    serving = asyncio.create_task(server.serve())
    await server.wait_started()
    host, port = server.addresses[0]
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        for _ in range(2):
            assert (await client.get("/")).text == "ok"
    await asyncio.wait_for(serving, IO_TIMEOUT_SECONDS)
    assert server.total_requests == 2


async def test_started_log_line_names_the_real_port(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nea.error"):
        async with run_server("tests.server.apps:hello") as srv:
            pass
    assert f"nea running on http://127.0.0.1:{srv.port}" in caplog.messages


async def test_given_sockets_are_served_and_left_open() -> None:
    import socket as socket_module

    from nea._sockets import bind_socket

    sock = bind_socket(nea.Config(app="m:a", port=0))
    try:
        async with run_server("tests.server.apps:hello", sockets=[sock]) as srv:
            assert srv.port == sock.getsockname()[1]
            async with httpx.AsyncClient(base_url=srv.url) as client:
                assert (await client.get("/")).text == "hello"
        assert sock.fileno() != -1 and sock.type == socket_module.SOCK_STREAM
    finally:
        sock.close()


class _LogSignal(logging.Handler):
    """Sets ``seen`` when ``message`` is logged: a wait on a log line, without polling."""

    def __init__(self, message: str) -> None:
        super().__init__(logging.INFO)
        self.message = message
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.seen.set()


async def test_taken_over_sockets_refuse_connections_once_shutdown_starts() -> None:
    from nea._sockets import bind_socket

    entered = asyncio.Event()
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    sock = bind_socket(nea.Config(app="m:a", port=0))
    host, port = sock.getsockname()[:2]
    error_logger = logging.getLogger("nea.error")
    signal = _LogSignal("Shutting down")
    level = error_logger.level
    error_logger.setLevel(logging.INFO)
    error_logger.addHandler(signal)
    try:
        server = nea.Server(nea.Config(app=app, lifespan="off", access_log=False))
        serving = asyncio.create_task(server.serve([sock], close_sockets=True))
        await server.wait_started()
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            request = asyncio.create_task(client.get("/"))
            await entered.wait()
            server.shutdown()
            await signal.seen.wait()  # logged once the server stopped listening
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(host, port)
            release.set()
            response = await asyncio.wait_for(request, IO_TIMEOUT_SECONDS)
        assert response.text == "done" and response.headers["connection"] == "close"
        await asyncio.wait_for(serving, IO_TIMEOUT_SECONDS)
        assert sock.fileno() == -1  # the server closed the socket it took over
    finally:
        error_logger.removeHandler(signal)
        error_logger.setLevel(level)
        sock.close()


async def test_app_import_from_string_with_app_dir_and_factory(tmp_path: Path) -> None:
    (tmp_path / "factoryapp.py").write_text(
        "from tests.server.apps import hello\ndef create():\n    return hello\n"
    )
    try:
        async with (
            run_server("factoryapp:create", factory=True, app_dir=str(tmp_path)) as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            assert (await client.get("/")).text == "hello"
    finally:
        sys.modules.pop("factoryapp", None)
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:app", "could not import module 'no_such_module_xyz'"),
        ("tests.server.apps:missing", "module 'tests.server.apps' has no attribute 'missing'"),
    ],
)
async def test_app_import_errors_are_clear(target: str, message: str) -> None:
    server = nea.Server(nea.Config(app=target, port=0))
    with pytest.raises(nea.AppImportError, match=message):
        await server.serve()
