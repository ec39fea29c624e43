"""A trip in an ``async def`` endpoint under nea's own loop driver, with asyncio and uvloop:
the request is answered and its task never hangs, even when the app swallowed the trip and
used up the grace allowance before awaiting (the loop then has to wake the task up with the
budget exhausted)."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import IO_TIMEOUT_SECONDS

import nea
from nea._loops import run_on_loop

from .apps import grace_app


async def _serve_one_request() -> tuple[bytes, nea.Server]:
    server = nea.Server(nea.Config(app=grace_app, port=0, lifespan="off", budget="256KiB"))
    serving = asyncio.create_task(server.serve())
    await server.wait_started()
    host, port = server.addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), IO_TIMEOUT_SECONDS)
    finally:
        writer.close()
        server.shutdown()
        await asyncio.wait_for(serving, IO_TIMEOUT_SECONDS)
    return raw, server


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_exhausted_budget_after_a_trip_never_hangs_the_task(native: str, loop_name: str) -> None:
    if loop_name == "uvloop":
        pytest.importorskip("uvloop")
    raw, server = run_on_loop(_serve_one_request(), loop=loop_name)
    assert raw.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert raw.endswith(b"\r\n\r\nInternal Server Error: Out of Memory")
    stats = server.statistics()
    assert (stats.served, stats.tripped, stats.busy) == (1, 1, 0)
