"""``nea.testing.AsyncClient``: requests through Admission in the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import pytest_asyncio

from nea import BudgetStatistics, budget, current_budget
from nea._admission import NO_SLOT_BODY, OUT_OF_MEMORY_BODY
from nea._types import Receive, Scope, Send
from nea.testing import AsyncClient, LifespanError

from .apps import Gate, MiB, failing_startup, make_app, no_lifespan, trips_after_start

EVENTS: list[str] = []


@pytest_asyncio.fixture
async def client() -> AsyncIterator[AsyncClient]:
    # pytest-asyncio runs this fixture's setup and teardown in two different tasks.
    EVENTS.clear()
    async with AsyncClient(make_app(EVENTS), budget="8MiB") as c:
        yield c
    assert EVENTS == ["startup", "shutdown"]


@pytest.mark.asyncio
async def test_fixture_client_runs_lifespan_and_budgets(client: AsyncClient, meter: str) -> None:
    assert EVENTS == ["startup"]
    response = await client.get("/greeting")
    assert response.text == "hello"
    small = await client.get("/small")
    stats = small.extensions["nea.budget"]
    assert isinstance(stats, BudgetStatistics)
    assert stats.limit == 8 * MiB
    assert MiB <= stats.peak < 2 * MiB


@pytest.mark.asyncio
async def test_hog_gets_500_and_neighbours_succeed(meter: str) -> None:
    results: dict[str, httpx.Response] = {}

    async def get(path: str) -> None:
        results[path] = await client.get(path)

    async with AsyncClient(make_app(), budget="8MiB") as client, anyio.create_task_group() as tg:
        tg.start_soon(get, "/hog")
        tg.start_soon(get, "/small")
    assert results["/hog"].status_code == 500
    assert results["/hog"].text == OUT_OF_MEMORY_BODY.decode()
    assert results["/small"].status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_works_under_anyio(anyio_backend: str) -> None:
    events: list[str] = []
    async with AsyncClient(make_app(events), budget="4MiB") as client:
        response = await client.post("/echo/x?q=1", content=b"hi", headers={"x-test": "1"})
        assert (await client.get("/greeting")).text == "hello"
        hog = await client.get("/hog")
    assert response.json()["budget"] == 4 * MiB
    assert response.json()["body"] == "hi"
    assert hog.status_code == 500
    assert events == ["startup", "shutdown"]


@pytest.mark.asyncio
async def test_trip_after_the_response_started_aborts_it(meter: str) -> None:
    async with AsyncClient(trips_after_start, budget="8MiB", lifespan="off") as client:
        with pytest.raises(httpx.RemoteProtocolError, match="exceeded its memory budget"):
            await client.get("/")


@pytest.mark.asyncio
async def test_busy_slots_answer_503() -> None:
    gate = Gate()
    first: list[httpx.Response] = []

    async def slow() -> None:
        first.append(await client.get("/slow"))

    async with (
        AsyncClient(make_app(gate=gate), slots=1, queue=0) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(slow)
        assert await anyio.to_thread.run_sync(gate.entered.wait, 30)
        busy = await client.get("/small")
        gate.release.set()
    assert busy.status_code == 503
    assert busy.text == NO_SLOT_BODY.decode()
    assert busy.extensions["nea.budget"] is None
    assert [r.status_code for r in first] == [200]


@pytest.mark.asyncio
async def test_app_runs_inside_the_request_budget_nested_in_the_callers(meter: str) -> None:
    seen: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["extensions"]["nea.budget"])
        seen.append(current_budget())
        data = bytearray(MiB)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": bytes(data[:0])})

    async with AsyncClient(app, lifespan="off") as client, budget("256MiB") as outer:
        response = await client.get("/")
    assert seen[0] is seen[1]
    assert response.extensions["nea.budget"].peak >= MiB
    assert outer.peak >= MiB


@pytest.mark.asyncio
async def test_lifespan_errors() -> None:
    with pytest.raises(LifespanError, match="lifespan startup failed: database unreachable"):
        async with AsyncClient(failing_startup):
            pytest.fail("the with block must not run")
    with pytest.raises(LifespanError, match="lifespan='on' but the app returned"):
        async with AsyncClient(no_lifespan, lifespan="on"):
            pytest.fail("the with block must not run")
    async with AsyncClient(no_lifespan) as client:
        assert (await client.get("/")).status_code == 204


@pytest.mark.asyncio
async def test_app_exceptions() -> None:
    async with AsyncClient(make_app()) as client:
        with pytest.raises(ValueError, match="boom"):
            await client.get("/boom")
    async with AsyncClient(make_app(), raise_server_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
