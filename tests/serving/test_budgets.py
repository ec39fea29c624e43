"""nea's server with budgets: trips before and after the response started, swallowed trips,
neighbours unaffected, the scope extension, access log lines and statistics.

These run the real ``nea.Server`` in the test's loop on port 0, once per parser backend.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from typing import Any

import httpx
import pytest
from tests.conftest import run_server

from nea import ConfigError, current_budget
from nea._types import Receive, Scope, Send
from nea.middleware import MemoryBudgetMiddleware

from .apps import EDGE_BODY, allocate, edge_app, hog_app, starlette_app, text

pytestmark = pytest.mark.asyncio

OOM = b"Internal Server Error: Out of Memory"


@pytest.fixture(params=["on", "off"])
def region(request: pytest.FixtureRequest) -> str:
    """``--region``: budgets served from the preallocated region, or the block table only."""
    mode: str = request.param
    return mode


def oom_response_ok(raw: bytes) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 500 Internal Server Error"
    headers = [line.lower() for line in lines[1:]]
    assert b"content-type: text/plain; charset=utf-8" in headers
    assert headers.count(b"connection: close") == 1
    assert body == OOM


async def test_trip_before_start_answers_500_and_logs_one_line(
    native: str, backend: str, region: str, caplog: pytest.LogCaptureFixture
) -> None:
    get = b"GET /alloc/64 HTTP/1.1\r\nHost: x\r\n\r\n"
    with caplog.at_level(logging.INFO, logger="nea"):
        async with run_server(hog_app, http=backend, budget="8MiB", slots=4, region=region) as srv:
            oom_response_ok(await srv.exchange(get))  # exchange reads until the close
            async with httpx.AsyncClient(base_url=srv.url) as client:
                assert (await client.get("/alloc/2")).text == "allocated 2 MiB"
            stats = srv.server.statistics()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    # Python 3.12 inlines comprehensions (PEP 709): the site is the enclosing function there.
    assert re.fullmatch(
        r"out of memory: GET /alloc/64 exceeded its budget of 8\.0 MiB \(peak \d+\.\d MiB\); "
        r"1\.0 MiB at .*apps\.py:\d+ in (<listcomp>|allocate) crossed it",
        warnings[0],
    ), warnings[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    access = [r.getMessage() for r in caplog.records if r.name == "nea.access"]
    assert re.search(
        r'"GET /alloc/64 HTTP/1.1" 500 Internal Server Error \d+\.\dms peak [78]\.\d MiB$',
        access[0],
    )
    assert re.search(r'"GET /alloc/2 HTTP/1.1" 200 OK \d+\.\dms peak 2\.\d MiB$', access[1])
    assert (stats.served, stats.tripped, stats.busy, stats.rejected) == (2, 1, 0, 0)


async def test_the_servers_own_work_is_not_charged_to_the_request(
    native: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A response sent with a few hundred bytes of budget left is whole: encoding its head,
    writing it and logging it are the server's work, done outside the request's budget.
    Closer to the edge the app's own call to ``send`` may be refused: then it is a clean
    500, never a lost or truncated response."""
    rooms = range(0, 2048, 48)
    with caplog.at_level(logging.INFO, logger="nea"):
        async with run_server(edge_app, http=backend, budget="64KiB", access_log=True) as srv:
            answers = {
                room: await srv.exchange(
                    b"GET /edge/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % room
                )
                for room in rooms
            }
    for room, raw in answers.items():
        if raw.startswith(b"HTTP/1.1 500 "):
            oom_response_ok(raw)
        else:
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK"), (room, raw)
            assert body == EDGE_BODY, (room, raw)
    # The server needs about 1 KiB of memory for a response; none of it is the request's.
    assert all(answers[room].startswith(b"HTTP/1.1 200 ") for room in rooms if room >= 512)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    access = [r.getMessage() for r in caplog.records if r.name == "nea.access"]
    for room in rooms:
        assert sum(f'"GET /edge/{room} HTTP/1.1"' in line for line in access) == 1, room
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    trips = sum(raw.startswith(b"HTTP/1.1 500 ") for raw in answers.values())
    assert len(warnings) == trips


async def test_trip_swallowed_by_the_app_still_answers_500(native: str, backend: str) -> None:
    async with run_server(hog_app, http=backend, budget="8MiB") as srv:
        raw = await srv.exchange(b"GET /swallow/64 HTTP/1.1\r\nHost: x\r\n\r\n")
    oom_response_ok(raw)


async def test_trip_after_start_aborts_the_connection(
    native: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="nea"):
        async with run_server(hog_app, http=backend, budget="8MiB") as srv:
            raw = await srv.exchange(b"GET /stream/64 HTTP/1.1\r\nHost: x\r\n\r\n")
            async with httpx.AsyncClient(base_url=srv.url) as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/stream/64")
                assert (await client.get("/alloc/1")).status_code == 200
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    assert b"first chunk" in body
    assert not body.endswith(b"0\r\n\r\n")  # no terminating chunk: visibly incomplete
    assert b"done" not in body
    # One warning per trip, no "Exception in ASGI application" traceback.
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_app_sees_its_budget_in_the_scope(backend: str) -> None:
    async with (
        run_server(hog_app, http=backend, budget="3MiB") as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        assert (await client.get("/budget/0")).text == f"limit {3 * 1024 * 1024}"


async def test_budget_statistics_are_final_when_the_request_ends(backend: str) -> None:
    budgets: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        budgets.append(scope["extensions"]["nea.budget"])
        data = bytearray(1024 * 1024)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytes(data[:1])})

    async with (
        run_server(app, http=backend) as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        await client.get("/")
    final = budgets[0].statistics()
    assert final.peak >= 1024 * 1024 and final.limit == 32 * 1024 * 1024
    assert budgets[0].statistics() == final


@pytest.mark.parametrize("hog_path", ["/hog", "/sync-hog"])
async def test_neighbours_unaffected_by_hogs(
    native: str, backend: str, region: str, hog_path: str
) -> None:
    async with (
        run_server(starlette_app, http=backend, budget="16MiB", slots=32, region=region) as srv,
        httpx.AsyncClient(base_url=srv.url, timeout=30) as client,
    ):
        hogs = [client.get(hog_path) for _ in range(3)]
        neighbours = [client.get("/neighbour" if i % 2 else "/sync-neighbour") for i in range(24)]
        responses = await asyncio.gather(*hogs, *neighbours)
        stats = srv.server.statistics()
    for response in responses[:3]:
        assert response.status_code == 500 and response.content == OOM
    assert [r.status_code for r in responses[3:]] == [200] * 24
    assert {r.text for r in responses[3:]} == {"ok 5000"}
    assert (stats.tripped, stats.served) == (3, 27)


async def test_the_server_keeps_nothing_of_the_apps_head(native: str, backend: str) -> None:
    # The app's header list is its memory: kept by the server once the head was written, it
    # would outlive the request's budget (an escaped block, and the slot's reset walks its
    # pages instead of taking the O(1) path).
    class Headers(list[tuple[bytes, bytes]]):
        pass

    kept: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers([(b"content-type", b"text/plain")])
        sent = weakref.ref(headers)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        del headers
        await send({"type": "http.response.body", "body": b"ok"})
        kept.append(sent() is not None)

    async with (
        run_server(app, http=backend) as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        response = await client.get("/")
    assert response.headers["content-type"] == "text/plain" and response.text == "ok"
    assert kept == [False]


@pytest.mark.parametrize("hog_path", ["/hog", "/sync-hog"])
async def test_trip_warning_names_the_refused_size_and_site(
    native: str, hog_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Also for ``def`` endpoints, whose MemoryError comes back through the thread pool
    without the budget's details: the line is built from the budget's own numbers."""
    with caplog.at_level(logging.WARNING, logger="nea.error"):
        async with (
            run_server(starlette_app, budget="16MiB") as srv,
            httpx.AsyncClient(base_url=srv.url, timeout=30) as client,
        ):
            assert (await client.get(hog_path)).status_code == 500
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(
        rf"out of memory: GET {hog_path} exceeded its budget of 16\.0 MiB \(peak \d+\.\d MiB\); "
        r"1\.0 MiB at .*apps\.py:\d+ in (<listcomp>|allocate) crossed it",
        warning,
    ), warning


async def test_meter_off_runs_without_budgets(backend: str) -> None:
    async with (
        run_server(hog_app, http=backend, budget="1MiB", meter="off") as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        response = await client.get("/alloc/8")
        assert response.text == "allocated 8 MiB"
        assert srv.server.statistics().served == 1


async def test_memory_plan_is_logged_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nea.error"):
        async with run_server(hog_app, budget="32MiB", slots=64) as srv:
            plan = srv.server.memory_plan
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory plan")]
    assert len(lines) == 1
    assert re.fullmatch(
        r"memory plan: 64 slots × 32\.0 MiB = 2\.0 GiB \+ baseline \d+\.\d MiB"
        r" \+ WebSocket pool 100 × 8\.0 MiB = 800\.0 MiB",
        lines[0],
    ), lines[0]
    assert plan is not None
    assert plan.budgets == 64 * 32 * 1024 * 1024 + 100 * 8 * 1024 * 1024


async def test_native_meter_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from nea.meter import _select

    monkeypatch.setattr(_select, "native_available", lambda: False)
    with pytest.raises(ConfigError, match=r"--meter native: the C extension nea\._meter is not"):
        async with run_server(hog_app, meter="native"):
            pass


async def test_middleware_under_nea_nests_inside_the_servers_budget(
    native: str, caplog: pytest.LogCaptureFixture
) -> None:
    outer: list[Any] = []

    async def spy(scope: Scope, receive: Receive, send: Send) -> None:
        outer.append(current_budget())
        await wrapped(scope, receive, send)

    wrapped = MemoryBudgetMiddleware(hog_app, budget="4MiB")
    with caplog.at_level(logging.WARNING, logger="nea.error"):
        async with (
            run_server(spy, budget="64MiB") as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            ok = await client.get("/alloc/2")
            hog = await client.get("/alloc/16")
            stats = srv.server.statistics()
    assert ok.status_code == 200
    assert hog.status_code == 500 and hog.content == OOM
    # The middleware's 4 MiB budget tripped, inside the server's: the server's budget saw
    # the same allocations (one meter, both charged) and did not trip itself.
    assert outer[0].limit == 64 * 1024 * 1024 and outer[0].peak >= 2 * 1024 * 1024
    assert not outer[1].tripped
    assert (stats.tripped, wrapped.statistics().tripped) == (0, 1)
    assert (
        len([r for r in caplog.records if "exceeded its budget of 4.0 MiB" in r.getMessage()]) == 1
    )


async def test_prefault_and_release_memory_idle_serve_normally(native: str) -> None:
    async with (
        run_server(hog_app, budget="1MiB", slots=2, prefault=True, release_memory="idle") as srv,
        httpx.AsyncClient(base_url=srv.url) as client,
    ):
        response = await client.get("/alloc/0")
        assert response.status_code == 200


async def executor_app(scope: Any, receive: Any, send: Any) -> None:
    """``run_in_executor(None, ...)``: the loop's default executor, which nea's server makes
    run the call in the request's context, so the request's budget is charged."""
    if scope["type"] != "http":
        return
    mib = int(scope["path"].strip("/"))
    loop = asyncio.get_running_loop()
    kept = await loop.run_in_executor(None, allocate, mib)
    await text(send, f"allocated {kept} MiB".encode())


async def test_run_in_executor_is_charged_to_the_request(native: str) -> None:
    async with (
        run_server(executor_app, budget="8MiB", slots=4) as srv,
        httpx.AsyncClient(base_url=srv.url, timeout=30) as client,
    ):
        small = await client.get("/2")
        hog = await client.get("/64")
    assert small.status_code == 200 and small.text == "allocated 2 MiB"
    assert hog.status_code == 500 and hog.text == OOM.decode()


async def test_context_thread_pool_executor_runs_calls_in_the_submitting_context(
    native: str,
) -> None:
    import nea

    with nea.ContextThreadPoolExecutor(max_workers=1) as pool, nea.budget("64MiB") as b:
        assert pool.submit(allocate, 8).result() == 8
        assert pool.submit(current_budget).result() is b
    assert b.peak >= 8 * 1024 * 1024
