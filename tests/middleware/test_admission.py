"""Admission at the ASGI level: budgets, trips, the 500 and 503 responses, the slot queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from nea import ConfigError
from nea._admission import OUT_OF_MEMORY_BODY, Admission
from nea._types import Receive, Scope, Send
from nea.meter import BudgetExceeded, budget, current_budget

from .asgi import FakeClient, http_scope, respond

MiB = 1024 * 1024
HOG_BYTES = 64 * MiB


async def hog(scope: Scope, receive: Receive, send: Send) -> None:
    data = bytearray(HOG_BYTES)  # refused under a 4 MiB budget
    await respond(send, bytes(data[:2]))


async def small(scope: Scope, receive: Receive, send: Send) -> None:
    data = [str(i) for i in range(1000)]
    await respond(send, str(len(data)).encode())


def admission(**options: Any) -> Admission:
    options.setdefault("budget", 4 * MiB)
    options.setdefault("slots", None)
    return Admission(**options)


async def run(
    adm: Admission, app: Any, path: str = "/", client: FakeClient | None = None
) -> FakeClient:
    client = client or FakeClient()
    await adm(app, http_scope(path), client.receive, client.send)
    return client


def assert_out_of_memory(client: FakeClient) -> None:
    assert client.status == 500
    assert client.headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert client.headers[b"connection"] == b"close"
    assert client.body == OUT_OF_MEMORY_BODY == b"Internal Server Error: Out of Memory"
    assert client.complete


@pytest.mark.asyncio
async def test_small_request_runs_inside_its_budget(meter: str) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["budget"] = scope["extensions"]["nea.budget"]
        seen["current"] = current_budget()
        seen["chunk"] = bytearray(MiB)
        await respond(send)

    adm = admission()
    client = await run(adm, app)
    assert client.status == 200 and client.body == b"ok"
    request_budget = seen["budget"]
    assert request_budget is seen["current"]
    assert request_budget.limit == 4 * MiB
    assert request_budget.statistics().peak >= MiB
    assert not request_budget.tripped
    assert current_budget() is None
    stats = adm.statistics()
    assert (stats.busy, stats.served, stats.tripped, stats.rejected) == (0, 1, 0, 0)


@pytest.mark.asyncio
async def test_caller_scope_is_not_modified() -> None:
    scope = http_scope()
    scope["extensions"] = {"other": {}}
    client = FakeClient()
    await admission()(small, scope, client.receive, client.send)
    assert scope["extensions"] == {"other": {}}


@pytest.mark.asyncio
async def test_trip_before_start_answers_500(meter: str, caplog: pytest.LogCaptureFixture) -> None:
    adm = admission()
    with caplog.at_level(logging.WARNING, logger="nea.error"):
        client = await run(adm, hog, "/hog")
    assert_out_of_memory(client)
    records = [r for r in caplog.records if r.name == "nea.error"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "GET /hog" in line
    assert "4.0 MiB" in line  # the limit
    assert "peak" in line
    if meter == "native":
        assert "64.0 MiB at" in line and "crossed it" in line
        assert "test_admission.py:" in line and "in hog" in line  # the site that crossed
    stats = adm.statistics()
    assert (stats.busy, stats.served, stats.tripped) == (0, 1, 1)


@pytest.mark.asyncio
async def test_trip_swallowed_by_the_app_still_answers_500(meter: str) -> None:
    async def careless(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(MemoryError):
            bytearray(HOG_BYTES)
        await respond(send, b"all is well")

    client = await run(admission(), careless)
    assert_out_of_memory(client)


@pytest.mark.asyncio
async def test_apps_own_error_page_after_a_trip_never_reaches_the_client(meter: str) -> None:
    async def catches_everything(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            bytearray(HOG_BYTES)
        except Exception:
            await respond(send, b"custom error page", status=503)

    client = await run(admission(), catches_everything)
    assert_out_of_memory(client)


@pytest.mark.asyncio
async def test_trip_after_start_raises_and_sends_nothing_more(meter: str) -> None:
    async def streams_then_hogs(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        try:
            bytearray(HOG_BYTES)
        except MemoryError:
            # An app that carries on after the error must not complete the response.
            await send({"type": "http.response.body", "body": b"rest", "more_body": False})

    adm = admission()
    client = FakeClient()
    with pytest.raises(MemoryError):
        await adm(streams_then_hogs, http_scope(), client.receive, client.send)
    assert client.status == 200
    assert client.body == b"first"
    assert not client.complete
    assert adm.statistics().tripped == 1
    assert adm.statistics().busy == 0


@pytest.mark.asyncio
async def test_ordinary_errors_propagate_unchanged() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("boom")

    adm = admission(slots=1)
    client = FakeClient()
    with pytest.raises(LookupError, match="boom"):
        await adm(broken, http_scope(), client.receive, client.send)
    assert client.sent == []
    stats = adm.statistics()
    assert (stats.busy, stats.served, stats.tripped) == (0, 1, 0)


@pytest.mark.asyncio
async def test_statistics_are_final_once_the_request_ends(meter: str) -> None:
    budgets: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        budgets.append(scope["extensions"]["nea.budget"])
        await respond(send, bytes(512 * 1024))

    await run(admission(), app)
    first = budgets[0].statistics()
    junk = [bytearray(MiB) for _ in range(3)]
    assert budgets[0].statistics() == first
    assert first.peak >= 512 * 1024
    del junk


@pytest.mark.asyncio
async def test_nests_inside_an_enclosing_budget(meter: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        blob = bytearray(MiB)
        await respond(send, bytes(blob[:1]))

    adm = admission(budget=2 * MiB)
    with budget(64 * MiB) as outer:
        inner_client = await run(adm, app)
        outer_peak = outer.peak
    assert inner_client.status == 200
    assert outer_peak >= MiB  # the outer budget was charged too: one meter, both budgets

    # Under a smaller enclosing budget the inner request trips through the outer limit; the
    # MemoryError is the enclosing layer's to handle.
    with pytest.raises(BudgetExceeded), budget(512 * 1024):
        await run(adm, app)


@pytest.mark.asyncio
async def test_without_budget_admission_only_counts_slots() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert "nea.budget" not in scope.get("extensions", {})
        assert current_budget() is None
        await respond(send)

    adm = Admission(budget=None, slots=2)
    client = await run(adm, app)
    assert client.status == 200
    assert adm.statistics().served == 1


@pytest.mark.asyncio
async def test_non_http_scopes_pass_through_untouched() -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))
        assert current_budget() is None

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await admission(slots=1)(app, scope, receive, send)
    assert calls == [(scope, receive, send)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": "lots"}, "budget: cannot parse size 'lots'"),
        ({"budget": 0}, "budget: expected a size above 0"),
        ({"slots": 0}, "slots: expected a whole number of at least 1"),
        ({"slots": 2, "queue": -1}, "queue: expected a whole number of at least 0"),
        ({"slots": 2, "queue_timeout": -1}, "queue_timeout: expected a non-negative number"),
        ({"slots": 2, "queue_timeout": float("nan")}, "queue_timeout"),
    ],
)
def test_invalid_options_raise_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        admission(**options)


def test_default_queue_is_twice_the_slots() -> None:
    assert Admission(budget="1MiB", slots=3).queue == 6
    assert Admission(budget="1MiB", slots=3, queue=0).queue == 0


# -- the slot queue -------------------------------------------------------------------------


class Gate:
    """An app whose requests block until released, recording the order they entered."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.entered_event: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}
        self.bodies: dict[str, bytes] = {}

    def expect(self, path: str) -> None:
        self.entered_event[path] = asyncio.Event()
        self.release[path] = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        self.entered.append(path)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies[path] = body
        self.entered_event[path].set()
        await self.release[path].wait()
        await respond(send, path.encode())


async def start(
    adm: Admission, app: Gate, path: str, client: FakeClient | None = None, **scope: Any
) -> tuple[asyncio.Task[None], FakeClient]:
    """Start a request and return once it is running or queued (it has called receive)."""
    app.expect(path)
    client = client or FakeClient()
    task = asyncio.create_task(adm(app, http_scope(path, **scope), client.receive, client.send))
    await client.first_receive.wait()
    return task, client


@pytest.mark.asyncio
async def test_waiters_get_slots_in_arrival_order() -> None:
    gate = Gate()
    adm = admission(slots=1, queue=3)
    first, _ = await start(adm, gate, "/a")
    queued = [await start(adm, gate, path) for path in ("/b", "/c", "/d")]
    assert adm.statistics().waiting == 3 and adm.statistics().busy == 1
    for path in ("/a", "/b", "/c"):
        await gate.entered_event[path].wait()
        gate.release[path].set()
        nxt = {"/a": "/b", "/b": "/c", "/c": "/d"}[path]
        await gate.entered_event[nxt].wait()
    gate.release["/d"].set()
    await asyncio.gather(first, *(task for task, _ in queued))
    assert gate.entered == ["/a", "/b", "/c", "/d"]
    assert [client.body for _, client in queued] == [b"/b", b"/c", b"/d"]
    stats = adm.statistics()
    assert (stats.busy, stats.waiting, stats.served, stats.rejected) == (0, 0, 4, 0)


@pytest.mark.asyncio
async def test_queued_request_gets_its_body_replayed() -> None:
    gate = Gate()
    adm = admission(slots=1)
    first, _ = await start(adm, gate, "/a")
    second, client = await start(adm, gate, "/b", FakeClient([b"hello ", b"world"]))
    gate.release["/a"].set()
    await gate.entered_event["/b"].wait()
    gate.release["/b"].set()
    await asyncio.gather(first, second)
    assert gate.bodies["/b"] == b"hello world"
    assert client.status == 200


@pytest.mark.asyncio
async def test_full_queue_answers_503_at_once() -> None:
    gate = Gate()
    adm = admission(slots=1, queue=0)
    first, _ = await start(adm, gate, "/a")
    rejected = await run(adm, gate, "/b")
    assert rejected.status == 503
    assert rejected.headers[b"retry-after"] == b"1"
    assert rejected.headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert rejected.body.startswith(b"Service Unavailable")
    assert "/b" not in gate.entered
    gate.release["/a"].set()
    await first
    stats = adm.statistics()
    assert (stats.served, stats.rejected, stats.busy) == (1, 1, 0)


@pytest.mark.asyncio
async def test_queue_timeout_answers_503() -> None:
    gate = Gate()
    adm = admission(slots=1, queue=4, queue_timeout=0)
    first, _ = await start(adm, gate, "/a")
    rejected = await run(adm, gate, "/b")
    assert rejected.status == 503
    assert "/b" not in gate.entered
    assert adm.statistics().waiting == 0
    gate.release["/a"].set()
    await first
    assert adm.statistics().busy == 0


@pytest.mark.asyncio
async def test_client_that_leaves_while_queued_never_reaches_the_app() -> None:
    gate = Gate()
    adm = admission(slots=1)
    first, _ = await start(adm, gate, "/a")
    second, client = await start(adm, gate, "/b")
    third, _ = await start(adm, gate, "/c")
    client.disconnect()
    await second
    assert client.sent == []
    assert adm.statistics().abandoned == 1
    assert adm.statistics().waiting == 1
    gate.release["/a"].set()
    await gate.entered_event["/c"].wait()
    gate.release["/c"].set()
    await asyncio.gather(first, third)
    assert gate.entered == ["/a", "/c"]
    assert adm.statistics().busy == 0


@pytest.mark.asyncio
async def test_expect_continue_request_is_not_read_while_queued() -> None:
    gate = Gate()
    adm = admission(slots=1)
    first, _ = await start(adm, gate, "/a")
    gate.expect("/b")
    client = FakeClient([b"payload"])
    headers = [(b"expect", b"100-continue")]
    second = asyncio.create_task(
        adm(gate, http_scope("/b", headers=headers), client.receive, client.send)
    )
    # Tasks start in creation order, so once /c is queued, /b has queued before it.
    third, _ = await start(adm, gate, "/c")
    assert adm.statistics().waiting == 2
    assert client.receive_calls == 0
    for path in ("/a", "/b", "/c"):
        gate.release[path].set()
        await gate.entered_event[path].wait()
    await asyncio.gather(first, second, third)
    assert gate.entered == ["/a", "/b", "/c"]
    assert gate.bodies["/b"] == b"payload"


@pytest.mark.asyncio
async def test_cancelled_waiter_does_not_lose_the_slot() -> None:
    gate = Gate()
    adm = admission(slots=1)
    first, _ = await start(adm, gate, "/a")
    second, _ = await start(adm, gate, "/b")
    third, _ = await start(adm, gate, "/c")
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    gate.release["/a"].set()
    await gate.entered_event["/c"].wait()
    gate.release["/c"].set()
    await asyncio.gather(first, third)
    assert gate.entered == ["/a", "/c"]
    assert adm.statistics().busy == 0 and adm.statistics().waiting == 0


@pytest.mark.asyncio
async def test_a_trip_releases_the_slot_for_the_next_request(meter: str) -> None:
    adm = admission(slots=1, queue=0)
    assert_out_of_memory(await run(adm, hog))
    assert (await run(adm, small)).status == 200
    assert adm.statistics().busy == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [4 * MiB, None])
async def test_an_app_that_raised_counts_as_served_with_or_without_a_budget(
    limit: int | None,
) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    adm = admission(budget=limit, slots=2)
    with pytest.raises(RuntimeError, match="boom"):
        await run(adm, broken)
    stats = adm.statistics()
    assert (stats.busy, stats.served, stats.tripped) == (0, 1, 0)


class _Panic(BaseException):
    """Like pydantic-core's ``PanicException``: a ``BaseException``, not an ``Exception``."""


@pytest.mark.asyncio
@pytest.mark.parametrize("turn_into", ["runtime-error", "base-exception", "swallow"])
async def test_a_trip_the_app_turns_into_something_else_still_answers_500(
    native: str, turn_into: str
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            data = b"x" * (6 * MiB)  # crosses the 4 MiB limit inside one call
            await respond(send, data[:2])
        except BudgetExceeded as exc:
            if turn_into == "runtime-error":
                raise RuntimeError("could not render") from exc
            if turn_into == "base-exception":
                raise _Panic("panicked") from exc
        await respond(send, b"the app's own page")

    adm = admission()
    client = await run(adm, app)
    assert_out_of_memory(client)
    assert adm.statistics().tripped == 1
