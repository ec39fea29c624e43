"""``Client.websocket_connect`` and ``AsyncClient.websocket_connect``: messages both ways,
the handshake answers (accept, close, denial response), app failures, the lifespan state,
and the WebSocket pool and budgets (``ws_slots``, ``ws_budget``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import starlette.websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from nea._types import Message, Receive, Scope, Send
from nea.testing import (
    AsyncClient,
    Client,
    WebSocketDenialResponse,
    WebSocketDisconnect,
)

from .apps import HOG_BYTES, make_app


async def echo(websocket: WebSocket) -> None:
    """Accepts (with the last offered subprotocol), then echoes every frame as it came."""
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol=offered[-1] if offered else None)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


echo_app = Starlette(routes=[WebSocketRoute("/echo", echo)])


def test_starlette_exception_class_is_raised() -> None:
    # Starlette's apps and tests catch Starlette's class; nea's client raises that one.
    assert WebSocketDisconnect is starlette.websockets.WebSocketDisconnect
    assert issubclass(WebSocketDenialResponse, WebSocketDisconnect)


def test_echo_text_bytes_and_json() -> None:
    with Client(echo_app).websocket_connect("/echo") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_bytes() == b"\x00\x01"
        ws.send_json({"a": [1, "é"]})
        assert ws.receive_json() == {"a": [1, "é"]}
        ws.send_json({"b": 2}, mode="binary")
        assert ws.receive_json(mode="binary") == {"b": 2}
        ws.send({"type": "websocket.receive", "text": "raw"})
        assert ws.receive() == {"type": "websocket.send", "text": "raw"}


def test_subprotocol_and_accept_headers() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": scope["subprotocols"][1],
                "headers": [(b"x-extra", b"1")],
            }
        )

    client = Client(app, lifespan="off")
    with client.websocket_connect("/", subprotocols=["chat", "superchat"]) as ws:
        assert ws.accepted_subprotocol == "superchat"
        assert ws.extra_headers == [(b"x-extra", b"1")]
    with Client(echo_app).websocket_connect("/echo") as ws:
        assert ws.accepted_subprotocol is None
        assert ws.extra_headers == []


def test_scope() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.close", "code": 1000})

    client = Client(app, lifespan="off", root_path="/api", cookies={"c": "1"})
    for url in ("/chat/r%C3%A9?x=1", "wss://example.org:8443/chat/r%C3%A9?x=1"):
        headers = {"x-token": "t"}
        connect = client.websocket_connect(url, ["a", "b"], headers=headers, auth=("u", "p"))
        with pytest.raises(WebSocketDisconnect), connect:
            pass  # pragma: no cover
    plain, secure = scopes
    assert plain["type"] == "websocket"
    assert (plain["scheme"], plain["server"]) == ("ws", ("testserver", 80))
    assert (secure["scheme"], secure["server"]) == ("wss", ("example.org", 8443))
    assert plain["path"] == "/chat/ré"
    assert plain["raw_path"] == b"/chat/r%C3%A9"
    assert plain["query_string"] == b"x=1"
    assert plain["root_path"] == "/api"
    assert plain["subprotocols"] == ["a", "b"]
    assert plain["client"] == ("testclient", 50000)
    assert "method" not in plain
    assert "websocket.http.response" in plain["extensions"]
    sent = dict(plain["headers"])
    assert sent[b"x-token"] == b"t"
    assert sent[b"sec-websocket-protocol"] == b"a, b"
    assert sent[b"sec-websocket-version"] == b"13"
    assert sent[b"cookie"] == b"c=1"
    assert sent[b"user-agent"] == b"testclient"
    assert sent[b"authorization"] == b"Basic dTpw"


def test_lifespan_state_is_copied_into_the_scope() -> None:
    seen: list[Any] = []

    async def greet(websocket: WebSocket) -> None:
        seen.append(websocket.state.greeting)
        websocket.state.greeting = "changed"  # a copy: the lifespan's state stays
        await websocket.accept()
        await websocket.send_text(websocket.state.greeting)
        await websocket.close()

    app = make_app()
    app.router.routes.append(WebSocketRoute("/greet", greet))
    with Client(app) as client:
        for _ in range(2):
            with client.websocket_connect("/greet") as ws:
                assert ws.receive_text() == "changed"
        assert client.app_state["greeting"] == "hello"
    assert seen == ["hello", "hello"]


def test_app_closes_with_code_and_reason() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})

    session = Client(app, lifespan="off").websocket_connect("/")
    with session as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_text()
    assert (info.value.code, info.value.reason) == (4001, "bye")


def test_client_close_code_reaches_the_app() -> None:
    got: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.append(await receive())
        await send({"type": "websocket.send", "text": "noted"})

    with Client(app, lifespan="off").websocket_connect("/") as ws:
        ws.close(code=1001, reason="going away")
        assert ws.receive_text() == "noted"
    assert got == [{"type": "websocket.disconnect", "code": 1001, "reason": "going away"}]


def test_leaving_the_session_sends_a_disconnect() -> None:
    got: list[Message] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.append(await receive())
        done.set()

    with Client(app, lifespan="off").websocket_connect("/"):
        pass
    assert done.is_set()
    assert got[0]["type"] == "websocket.disconnect" and got[0]["code"] == 1000


def test_close_before_accept_denies() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    session = Client(app, lifespan="off").websocket_connect("/")
    with pytest.raises(WebSocketDisconnect) as info, session:
        pass  # pragma: no cover
    assert info.value.code == 1008
    assert not isinstance(info.value, WebSocketDenialResponse)


def test_denial_response() -> None:
    async def deny(websocket: WebSocket) -> None:
        response = PlainTextResponse("go away", status_code=403, headers={"x-why": "token"})
        await websocket.send_denial_response(response)

    app = Starlette(routes=[WebSocketRoute("/ws", deny)])
    with pytest.raises(WebSocketDenialResponse) as info, Client(app).websocket_connect("/ws"):
        pass  # pragma: no cover
    assert info.value.status_code == 403
    assert info.value.content == b"go away"
    assert info.value.headers["x-why"] == "token"


def test_app_exception_is_raised() -> None:
    async def before_accept(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("before")

    async def after_accept(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("after")

    session = Client(before_accept, lifespan="off").websocket_connect("/")
    with pytest.raises(ValueError, match="before"), session:
        pass  # pragma: no cover
    session = Client(after_accept, lifespan="off").websocket_connect("/")
    with pytest.raises(ValueError, match="after"), session as ws:
        ws.send_text("boom")
        ws.receive_text()


def test_app_exception_without_raising_answers_as_the_server() -> None:
    async def after_accept(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError("after")

    async def before_accept(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("before")

    options: dict[str, Any] = {"lifespan": "off", "raise_server_exceptions": False}
    session = Client(after_accept, **options).websocket_connect("/")
    with session as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert closed.value.code == 1011
    session = Client(before_accept, **options).websocket_connect("/")
    with pytest.raises(WebSocketDenialResponse) as denied, session:
        pass  # pragma: no cover
    assert denied.value.status_code == 500


def test_app_returning_without_answering_raises() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    session = Client(app, lifespan="off").websocket_connect("/")
    with pytest.raises(RuntimeError, match="without accepting or closing"), session:
        pass  # pragma: no cover


async def hog_on_message(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts, then allocates far past any test budget when a message arrives."""
    await receive()
    await send({"type": "websocket.accept"})
    await receive()
    data = bytearray(HOG_BYTES)
    await send({"type": "websocket.send", "bytes": bytes(data[:4])})


def test_budget_trip_closes_with_1011(meter: str) -> None:
    client = Client(hog_on_message, lifespan="off", ws_budget="8MiB")
    with client.websocket_connect("/") as ws:
        ws.send_text("allocate")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_bytes()
    assert info.value.code == 1011
    assert client.ws_admission.tripped == 1


def test_without_ws_budget_the_connection_is_not_metered(meter: str) -> None:
    client = Client(hog_on_message, lifespan="off")
    with client.websocket_connect("/") as ws:
        ws.send_text("allocate")
        assert ws.receive_bytes() == b"\x00" * 4
    assert client.ws_admission.tripped == 0


def test_full_ws_pool_denies_with_503() -> None:
    with Client(echo_app, ws_slots=1) as client:
        second = client.websocket_connect("/echo")
        first = client.websocket_connect("/echo")
        with first, pytest.raises(WebSocketDenialResponse) as info, second:
            pass  # pragma: no cover
        assert info.value.status_code == 503
        with client.websocket_connect("/echo") as ws:  # the slot is free again
            ws.send_text("again")
            assert ws.receive_text() == "again"


@pytest.mark.asyncio
async def test_async_client_echo_and_close() -> None:
    client = AsyncClient(echo_app)
    async with client, client.websocket_connect("/echo", subprotocols=["x"]) as ws:
        assert ws.accepted_subprotocol == "x"
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"
        await ws.send_json([1, 2])
        assert await ws.receive_json() == [1, 2]
        await ws.send_bytes(b"b")
        assert await ws.receive_bytes() == b"b"


@pytest.mark.asyncio
async def test_async_client_trip_and_denial(meter: str) -> None:
    client = AsyncClient(hog_on_message, lifespan="off", ws_budget="8MiB")
    async with client.websocket_connect("/") as ws:
        await ws.send_text("allocate")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_bytes()
    assert info.value.code == 1011

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1003})

    with pytest.raises(WebSocketDisconnect) as refused:
        async with AsyncClient(refuse, lifespan="off").websocket_connect("/"):
            pass  # pragma: no cover
    assert refused.value.code == 1003


@pytest.mark.asyncio
async def test_async_session_waits_for_the_app_after_the_disconnect() -> None:
    got: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        got.append(await receive())  # the client's answer to the close

    async with AsyncClient(app, lifespan="off").websocket_connect("/") as ws:
        with pytest.raises(WebSocketDisconnect):
            await ws.receive_text()
    assert got == [{"type": "websocket.disconnect", "code": 1000, "reason": None}]


def test_session_outside_its_with_block_raises() -> None:
    session = Client(echo_app).websocket_connect("/echo")
    with pytest.raises(RuntimeError, match="not open"):
        session.send_text("early")
    with session as ws:
        ws.send_text("in")
        assert ws.receive_text() == "in"
    with pytest.raises(RuntimeError, match="not open"):
        ws.receive_text()
