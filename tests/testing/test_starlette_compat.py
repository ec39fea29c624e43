"""``nea.testing.Client`` behaves as Starlette's ``TestClient`` where tests rely on it:
reuse of one instance, streamed responses, lifespan errors, HEAD, trailers, the debug
extension, ``app_state``, the user-agent, ASGI2 apps."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nea._types import Message, Receive, Scope, Send
from nea.testing import AsyncClient, Client, LifespanError

from .apps import make_app, raises_on_lifespan


def echo_scope_app() -> Starlette:
    async def scope_view(request: Request) -> Response:
        return JSONResponse(
            {
                "server": list(request.scope["server"]),
                "user_agent": request.headers.get("user-agent"),
                "extensions": sorted(request.scope["extensions"]),
                "state": dict(request.scope["state"]),
            }
        )

    return Starlette(routes=[Route("/", scope_view, methods=["GET", "HEAD"])])


def test_one_instance_is_used_without_with_then_entered_twice() -> None:
    events: list[str] = []
    client = Client(make_app(events))
    assert client.get("/small").status_code == 200  # without with: no lifespan
    with client:
        assert client.get("/greeting").text == "hello"
    with client:
        assert client.get("/greeting").text == "hello"
    assert client.get("/small").status_code == 200
    assert events == ["startup", "shutdown", "startup", "shutdown"]


def test_user_agent_server_port_and_extensions_are_starlettes() -> None:
    client = Client(echo_scope_app(), base_url="http://[::1]:0")
    body = client.get("/").json()
    assert body["user_agent"] == "testclient"
    assert body["server"] == ["::1", 0]
    assert body["extensions"] == ["http.response.debug", "http.response.trailers", "nea.budget"]
    assert (
        Client(echo_scope_app(), headers={"user-agent": "mine"}).get("/").json()["user_agent"]
        == "mine"
    )


def test_app_state_is_the_lifespan_state_and_copied_into_requests() -> None:
    client = Client(echo_scope_app())
    client.app_state["db"] = "sqlite"
    assert client.get("/").json()["state"] == {"db": "sqlite"}
    events: list[str] = []
    with Client(make_app(events)) as started:
        assert started.app_state == {"greeting": "hello"}


def test_head_response_has_no_body_like_neas_server() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello, world"})

    response = Client(app, lifespan="off").head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_app_sees_the_disconnect_once_the_response_is_complete() -> None:
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await request.body()
        seen.append(await request.is_disconnected())
        await PlainTextResponse("ok")(scope, receive, send)
        seen.append(await request.is_disconnected())

    assert Client(app, lifespan="off").get("/").text == "ok"
    assert seen == [False, True]


async def fails_midway(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("midway")


def test_error_after_the_response_started() -> None:
    response = Client(fails_midway, raise_server_exceptions=False).get("/")
    assert response.status_code == 200
    assert response.content == b"partial"
    with pytest.raises(ValueError, match="midway"):
        Client(fails_midway).get("/")


def test_asgi2_app() -> None:
    def app(scope: Scope) -> Any:
        async def instance(receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"asgi2"})

        return instance

    assert Client(app, lifespan="off").get("/").text == "asgi2"


def test_trailers_and_debug_extensions() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.debug", "info": {"template": "t.html", "context": 1}})
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"hello"})
        await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})

    response = Client(app, lifespan="off").get("/")
    assert response.content == b"hello"
    assert response.extensions["http.response.trailers"] == [(b"x-a", b"1")]
    assert "x-a" not in response.headers
    assert response.template == "t.html"  # type: ignore[attr-defined]
    assert response.context == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.trailers"}], "without declaring trailers"),
        (
            [
                {"type": "http.response.start", "status": 200, "trailers": True},
                {"type": "http.response.trailers"},
            ],
            "before the body was complete",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body"},
                {"type": "http.response.body"},
            ],
            "after the body was complete",
        ),
    ],
)
def test_out_of_order_messages_are_errors(messages: list[Message], error: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)

    with pytest.raises(RuntimeError, match=error):
        Client(app, lifespan="off").get("/")


class Streamer:
    """An app that sends numbered chunks, each once the test allows it, and records
    whether it was cancelled (closing a response early must cancel it)."""

    def __init__(self) -> None:
        self.sent = 0
        self.allow = threading.Semaphore(0)
        self.cancelled = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for n in range(3):
                # Abandoned when cancelled: the test releases the thread at its end.
                await anyio.to_thread.run_sync(self.allow.acquire, abandon_on_cancel=True)
                await send({"type": "http.response.body", "body": b"%d" % n, "more_body": True})
                self.sent += 1
            await send({"type": "http.response.body", "body": b""})
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise


def test_stream_is_incremental_with_backpressure_and_close_cancels() -> None:
    app = Streamer()
    with Client(app, lifespan="off") as client, client.stream("GET", "/") as response:
        assert response.status_code == 200  # before any chunk was sent
        chunks = response.iter_raw()
        app.allow.release()
        assert next(chunks) == b"0"
        app.allow.release()
        assert next(chunks) == b"1"
        # The chunk was taken, so the app's send returned; the next one is not sent
        # until the test allows it.
        assert app.sent == 2
    assert app.cancelled.is_set()  # closed before the end: the app was cancelled
    assert response.extensions["nea.budget"] is not None
    app.allow.release()  # the abandoned worker thread


def test_closing_the_client_cancels_open_responses() -> None:
    app = Streamer()
    client = Client(app, lifespan="off")
    response = client.send(client.build_request("GET", "/"), stream=True)
    assert response.status_code == 200
    client.close()
    assert app.cancelled.is_set()
    app.allow.release()  # the abandoned worker thread


def test_lifespan_startup_error_is_the_apps_own() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise KeyError("startup")
        yield

    with pytest.raises(KeyError, match="startup"), Client(Starlette(lifespan=lifespan)):
        pytest.fail("the with block must not run")


def test_lifespan_shutdown_error_is_the_apps_own() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        raise KeyError("shutdown")

    client = Client(Starlette(lifespan=lifespan))
    with pytest.raises(KeyError, match="shutdown"), client:
        pass


def test_app_raising_on_the_lifespan_scope_fails_even_in_auto_mode() -> None:
    with pytest.raises(LookupError, match="expected an http scope"), Client(raises_on_lifespan):
        pytest.fail("the with block must not run")
    with Client(raises_on_lifespan, lifespan="off") as client:
        assert client.get("/").status_code == 204


def test_lifespan_failed_message_without_exception_is_lifespan_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanError, match="no database"), Client(app):
        pytest.fail("the with block must not run")


# asyncio only: httpx's own async generators around the body, left unexhausted when a
# test stops reading, make trio warn (an error here).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_async_client_streams_strips_head_and_reenters() -> None:
    app = Streamer()
    client = AsyncClient(app, lifespan="off")
    async with (
        client,
        client.stream("GET", "/") as response,
        contextlib.aclosing(response.aiter_raw()) as chunks,
    ):
        app.allow.release()
        assert await chunks.__anext__() == b"0"
    assert app.cancelled.is_set()
    app.allow.release()  # the abandoned worker thread
    async with client:
        app.allow.release(6)  # three chunks for GET, three for HEAD
        response = await client.get("/")
        assert response.content == b"012"
        assert (await client.head("/")).content == b""
    assert isinstance(response, httpx.Response)


def test_closing_a_complete_response_waits_for_background_work_and_raises_its_error() -> None:
    finished = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})
        # Background work after a complete response (as Starlette's BackgroundTask): the
        # test closes the response now, which must not cancel this.
        await anyio.sleep(0)
        finished.set()
        raise KeyError("background")

    client = Client(app, lifespan="off")
    with pytest.raises(KeyError, match="background"), client.stream("GET", "/") as response:
        assert next(response.iter_raw()) == b"hello"
    assert finished.is_set()
    with pytest.raises(KeyError, match="background"):
        client.get("/")  # reads the whole body: raised at its end
    quiet = Client(app, lifespan="off", raise_server_exceptions=False)
    with quiet.stream("GET", "/") as response:
        assert next(response.iter_raw()) == b"hello"


@pytest.mark.parametrize("ending", ["close", "with"])
def test_closing_the_client_cancels_background_work_of_open_responses(ending: str) -> None:
    cancelled = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})
        try:
            await anyio.sleep_forever()  # background work that never ends by itself
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    client = Client(app)
    with client if ending == "with" else contextlib.closing(client):
        response = client.send(client.build_request("GET", "/"), stream=True)
        assert next(response.iter_raw()) == b"hello"
    assert cancelled.is_set()
