"""Shared fixtures: the parser-backend parametrization, ``run_server``, the meter
selection and the ``start_nea`` subprocess factory.

Every protocol test takes the ``backend`` fixture, so it runs once per parser backend.
``run_server`` starts a real ``nea.Server`` on port 0 in the test's loop and waits on its
started signal (never polls). ``meter`` runs a test under both meters (the native one with
the region and with the block table only), ``native`` only under the C extension (region
and table); both fail instead of skipping when ``NEA_REQUIRE_NATIVE=1`` and the
extension is missing, so CI cannot pass without it. ``start_nea(*args)`` starts the ``nea``
CLI in a subprocess that is always killed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from tests.cli.helpers import NeaProcess

import nea
from nea._types import ASGIApp
from nea.meter import _region, _select

BACKENDS = ["h11", "httptools"]
# Upper bound for any single network wait in tests; they normally take milliseconds.
IO_TIMEOUT_SECONDS = 10.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each parser backend in turn."""
    return str(request.param)


def use_meter(name: str, *, region: bool = True) -> Iterator[str]:
    """Make ``name`` the meter of new budgets for one test (a generator for fixtures); the
    native meter fails instead of skipping when ``NEA_REQUIRE_NATIVE=1`` and it is missing."""
    if name == "native" and not _select.native_available():
        if os.environ.get("NEA_REQUIRE_NATIVE") == "1":
            pytest.fail("NEA_REQUIRE_NATIVE=1 but the C extension nea._meter does not import")
        pytest.skip("the C extension nea._meter is not built for this interpreter")
    previous = _select.use_meter(name)
    was = _region.set_enabled(region)
    try:
        yield name
    finally:
        _region.set_enabled(was)
        _select.restore_meter(previous)


@pytest.fixture(params=["native", "native-table", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each meter in turn, made the meter of new budgets for the test; the native one twice:
    outermost budgets served from the region, and the block table only."""
    param: str = request.param
    yield from use_meter(param.removesuffix("-table"), region=param == "native")


@pytest.fixture(params=["region", "table"])
def native(request: pytest.FixtureRequest) -> Iterator[str]:
    """The C extension's meter (fails under ``NEA_REQUIRE_NATIVE=1`` when missing), with the
    region and with the block table only."""
    yield from use_meter("native", region=request.param == "region")


@pytest.fixture
def native_table() -> Iterator[str]:
    """The C extension's meter, block table only (tests of the table itself)."""
    yield from use_meter("native", region=False)


@pytest.fixture
def native_region() -> Iterator[str]:
    """The C extension's meter with the region (tests of the region itself)."""
    yield from use_meter("native", region=True)


@pytest.fixture
def start_nea() -> Iterator[Callable[..., NeaProcess]]:
    """Factory fixture: ``start_nea(*args)`` starts nea; every process is killed at teardown."""
    started: list[NeaProcess] = []

    def start(
        *args: str,
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> NeaProcess:
        process = NeaProcess(args, pass_fds=pass_fds, env=env, cwd=cwd)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class RawConnection:
    """A plain TCP client for protocol edge cases: write bytes, read parsed responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(self) -> tuple[int, list[tuple[str, str]]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_SECONDS)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        return status, headers

    async def read_response(self, *, head_request: bool = False) -> Response:
        status, headers = await self.read_head()
        response = Response(status, headers, b"")
        length = response.header("content-length")
        if head_request or status in (204, 304) or 100 <= status < 200:
            return response
        if length is not None:
            response.body = await self._read_exactly(int(length))
        elif response.header("transfer-encoding") == "chunked":
            response.body = await self._read_chunked()
        else:
            response.body = await self.read_until_close()
        return response

    async def _read_exactly(self, size: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), IO_TIMEOUT_SECONDS)

    async def _read_chunked(self) -> bytes:
        body = b""
        while True:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), IO_TIMEOUT_SECONDS)
            size = int(line.strip(), 16)
            data = await self._read_exactly(size + 2)
            if size == 0:
                return body
            body += data[:-2]

    async def read_until_close(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(), IO_TIMEOUT_SECONDS)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class RunningServer:
    server: nea.Server
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[RawConnection]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = RawConnection(reader, writer)
        try:
            yield conn
        finally:
            await conn.close()

    async def exchange(self, data: bytes) -> bytes:
        """Send ``data``, then read until the server closes the connection."""
        async with self.connect() as conn:
            await conn.send(data)
            return await conn.read_until_close()


@contextlib.asynccontextmanager
async def run_server(
    app: ASGIApp | str, *, sockets: list[socket.socket] | None = None, **options: Any
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on 127.0.0.1 port 0 for the duration of the block, then shut down."""
    options.setdefault("lifespan", "off")
    config = nea.Config(app=app, port=0, **options)
    server = nea.Server(config)
    task = asyncio.create_task(server.serve(sockets))
    try:
        await server.wait_started()
    except nea.NeaError:
        await task  # re-raises the real reason serve() could not start
        raise
    host, port = server.addresses[0][:2]
    try:
        yield RunningServer(server, host, port, "https" if config.is_ssl else "http")
    finally:
        server.shutdown()
        await asyncio.wait_for(task, IO_TIMEOUT_SECONDS)
