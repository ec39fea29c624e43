"""``nea.testing.Client``: requests through Admission from sync code, lifespan, slots."""

from __future__ import annotations

import threading
from fnmatch import fnmatch

import httpx
import pytest

from nea import BudgetStatistics, ConfigError, budget
from nea._admission import NO_SLOT_BODY, OUT_OF_MEMORY_BODY
from nea._types import Receive, Scope, Send
from nea.testing import Client, LifespanError

from .apps import HOG_BYTES, Gate, MiB, failing_startup, make_app, no_lifespan, trips_after_start


def test_request_reaches_the_app_with_its_budget() -> None:
    with Client(make_app(), budget="8MiB", root_path="/api") as client:
        response = client.post("/echo/a%20b?x=1", content=b"payload", headers={"x-test": "yes"})
    assert response.status_code == 200
    assert response.json() == {
        "method": "POST",
        "path": "/echo/a b",
        "query": "x=1",
        "root_path": "/api",
        "header": "yes",
        "body": "payload",
        "client": ["testclient", 50000],
        "budget": 8 * MiB,
    }


def test_response_carries_the_request_budget_statistics(meter: str) -> None:
    with Client(make_app(), budget="8MiB") as client:
        response = client.get("/small")
    assert response.status_code == 200
    stats = response.extensions["nea.budget"]
    assert isinstance(stats, BudgetStatistics)
    assert stats.limit == 8 * MiB
    assert MiB <= stats.peak < 2 * MiB
    assert stats.refused == 0


def test_hog_gets_500_out_of_memory(meter: str) -> None:
    with Client(make_app(), budget="8MiB") as client:
        hog = client.get("/hog")
        neighbour = client.get("/small")
    assert hog.status_code == 500
    assert hog.text == OUT_OF_MEMORY_BODY.decode() == "Internal Server Error: Out of Memory"
    assert hog.headers["connection"] == "close"
    stats = hog.extensions["nea.budget"]
    assert stats.limit == 8 * MiB
    if meter == "native":
        # Refused past its ceiling, or granted from the shared plan and delivered: a 500.
        assert stats.refused_at is not None and "apps.py" in stats.refused_at
    else:
        assert stats.peak >= HOG_BYTES
    assert neighbour.status_code == 200


def test_trip_after_the_response_started_aborts_it(meter: str) -> None:
    with (
        Client(trips_after_start, budget="8MiB", lifespan="off") as client,
        pytest.raises(httpx.RemoteProtocolError, match="exceeded its memory budget"),
    ):
        client.get("/")


def test_app_exception_is_raised_by_default() -> None:
    with Client(make_app()) as client, pytest.raises(ValueError, match="boom"):
        client.get("/boom")


def test_app_exception_becomes_500_when_not_raised() -> None:
    with Client(make_app(), raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"  # Starlette's own error response
    assert response.extensions["nea.budget"].limit == 32 * MiB


def test_lifespan_runs_around_the_with_block() -> None:
    events: list[str] = []
    client = Client(make_app(events))
    with client:
        assert events == ["startup"]
        assert client.get("/greeting").text == "hello"
    assert events == ["startup", "shutdown"]


def test_without_with_requests_work_and_lifespan_does_not_run() -> None:
    events: list[str] = []
    client = Client(make_app(events))
    response = client.get("/small")
    client.close()
    assert response.status_code == 200
    assert response.extensions["nea.budget"].limit == 32 * MiB
    assert events == []


def test_app_without_lifespan_support_works_in_auto_mode() -> None:
    with Client(no_lifespan) as client:
        assert client.get("/").status_code == 204


def test_lifespan_on_requires_the_app_to_answer() -> None:
    client = Client(no_lifespan, lifespan="on")
    with pytest.raises(LifespanError, match="lifespan='on' but the app returned"), client:
        pytest.fail("the with block must not run")
    assert client.get("/").status_code == 204  # still usable without lifespan


def test_failed_startup_raises_with_the_app_message() -> None:
    client = Client(failing_startup)
    failed = "lifespan startup failed: database unreachable"
    with pytest.raises(LifespanError, match=failed), client:
        pytest.fail("the with block must not run")


def test_no_budget_means_no_statistics() -> None:
    with Client(make_app(), budget=None) as client:
        response = client.get("/greeting")
    assert response.status_code == 200
    assert response.extensions["nea.budget"] is None


def test_busy_slots_answer_503_from_another_thread() -> None:
    gate = Gate()
    responses: list[httpx.Response] = []
    with Client(make_app(gate=gate), slots=1, queue=0) as client:
        first = threading.Thread(target=lambda: responses.append(client.get("/slow")))
        first.start()
        try:
            assert gate.entered.wait(timeout=30)
            busy = client.get("/small")
        finally:
            gate.release.set()
            first.join(timeout=30)
    assert busy.status_code == 503
    assert busy.text == NO_SLOT_BODY.decode()
    assert busy.headers["retry-after"] == "1"
    assert busy.extensions["nea.budget"] is None
    assert [r.status_code for r in responses] == [200]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": "lots"}, "budget: cannot parse size 'lots'*"),
        ({"slots": 0}, "slots: expected a whole number of at least 1 or None, got 0"),
        ({"lifespan": "maybe"}, "lifespan: expected 'auto', 'on' or 'off', got 'maybe'"),
    ],
)
def test_invalid_options_raise_config_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Client(make_app(), **options)  # type: ignore[arg-type]
    assert fnmatch(str(info.value), message), str(info.value)


def test_requests_are_charged_to_the_callers_budget_too(meter: str) -> None:
    # The portal call carries the caller's context into the app's task, so a budget
    # around the request (e.g. a test's memory_budget marker) sees the app's memory.
    with Client(make_app()) as client, budget("256MiB") as outer:
        response = client.get("/small")
    assert response.extensions["nea.budget"].peak >= MiB
    assert outer.peak >= response.extensions["nea.budget"].peak


async def silent(scope: Scope, receive: Receive, send: Send) -> None:
    """Returns without answering."""


def test_app_that_never_answers() -> None:
    with (
        Client(silent, lifespan="off") as client,
        pytest.raises(RuntimeError, match="the app returned without sending a response"),
    ):
        client.get("/")
    with Client(silent, lifespan="off", raise_server_exceptions=False) as client:
        response = client.get("/")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["connection"] == "close"


def test_fastapi_sync_endpoint_in_threadpool_is_budgeted(meter: str) -> None:
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/hog")
    def hog() -> dict[str, int]:  # a plain def: FastAPI runs it in a worker thread
        return {"size": len(bytearray(HOG_BYTES))}

    @api.get("/ok")
    def ok() -> dict[str, int]:
        return {"size": len(bytearray(MiB))}

    with Client(api, budget="8MiB") as client:
        hog_response = client.get("/hog")
        ok_response = client.get("/ok")
    assert hog_response.status_code == 500
    assert hog_response.text == OUT_OF_MEMORY_BODY.decode()
    assert ok_response.json() == {"size": MiB}
    assert ok_response.extensions["nea.budget"].peak >= MiB


def test_trio_backend() -> None:
    pytest.importorskip("trio")
    events: list[str] = []
    with Client(make_app(events), budget="8MiB", backend="trio") as client:
        assert client.get("/greeting").text == "hello"
        assert client.get("/hog").status_code == 500
    assert events == ["startup", "shutdown"]
