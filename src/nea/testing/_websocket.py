"""WebSocket sessions of nea's test clients: ``Client.websocket_connect`` and its async twin.

Owns: ``WebSocketDisconnect`` and ``WebSocketDenialResponse`` (what a test sees when the app
closes or denies), ``Connection`` (one connection in the event loop: the app's task, its
``receive``/``send``, the client's side of both), ``WebSocketSession`` (sync, through the
client's portal) and ``AsyncWebSocketSession``. Must not import the server or the CLI.

Behaviour is Starlette's ``TestClient.websocket_connect``: entering the session sends
``websocket.connect`` and waits for the app's answer; a close before accept raises
``WebSocketDisconnect``, a denial response (the ``websocket.http.response`` extension)
raises ``WebSocketDenialResponse`` carrying it. Leaving the session sends a
``websocket.disconnect`` (1000) unless either side closed already, cancels the app if it is
still running, and raises the app's exception. Every connection runs through the client's
``nea._ws_admission.WebSocketAdmission``, as under nea's server: with a ``ws_budget`` it runs
inside its own budget for its whole life, and a trip closes it with 1011.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from nea._types import Message, Scope
from nea._ws_admission import WebSocketAdmission
from nea.testing._call import Driver
from nea.testing._lifespan import Detached

if TYPE_CHECKING:
    import anyio.from_thread

    from nea.testing import AsyncClient, Client

try:  # Starlette's tests and apps catch Starlette's class: raise that one when it exists.
    from starlette.websockets import WebSocketDisconnect
except ImportError:  # pragma: no cover - Starlette is installed wherever nea is developed
    from nea._errors import NeaError

    class WebSocketDisconnect(NeaError):  # type: ignore[no-redef]
        """The app closed the WebSocket (or refused it with a close before accept)."""

        def __init__(self, code: int = 1000, reason: str | None = None) -> None:
            super().__init__(f"the WebSocket was closed with code {code}: {reason or ''}")
            self.code = code
            self.reason = reason or ""


class WebSocketDenialResponse(httpx.Response, WebSocketDisconnect):  # type: ignore[misc]
    """The app refused the handshake with an HTTP response (ASGI's
    ``websocket.http.response`` extension): the response, and a ``WebSocketDisconnect``."""


__all__ = [
    "AsyncWebSocketSession",
    "Connection",
    "WebSocketDenialResponse",
    "WebSocketDisconnect",
    "WebSocketSession",
    "websocket_request",
    "websocket_scope",
]

# RFC 6455 §7.4.1: what the client sends when the test leaves the session.
CLOSE_NORMAL = 1000
# RFC 6455 §7.4.1: what nea's server closes with when the app raised after accept.
CLOSE_INTERNAL_ERROR = 1011
_DENIAL = "websocket.http.response.start"


def websocket_request(
    client: httpx.Client | httpx.AsyncClient,
    url: str,
    subprotocols: Sequence[str] | None,
    kwargs: dict[str, Any],
) -> httpx.Request:
    """The handshake request, built as Starlette builds it: relative to ``ws://testserver``,
    with the client's headers, cookies and params merged in."""
    headers = dict(kwargs.pop("headers", None) or {})
    headers.setdefault("connection", "upgrade")
    headers.setdefault("sec-websocket-key", "testserver==")
    headers.setdefault("sec-websocket-version", "13")
    if subprotocols is not None:
        headers.setdefault("sec-websocket-protocol", ", ".join(subprotocols))
    passed = {"params", "cookies"}
    # Accepted as Starlette's client accepts them; they mean nothing for an upgrade.
    ignored = {"follow_redirects", "timeout", "extensions"}
    unknown = set(kwargs) - passed - ignored - {"auth"}
    if unknown:
        raise TypeError(f"websocket_connect() got unexpected keyword arguments {sorted(unknown)}")
    options = {name: kwargs[name] for name in passed if name in kwargs}
    request = client.build_request(
        "GET", urljoin("ws://testserver", url), headers=headers, **options
    )
    auth = kwargs.get("auth", client.auth)
    if isinstance(auth, tuple):
        auth = httpx.BasicAuth(*auth)
    elif auth is not None and not isinstance(auth, httpx.Auth):
        auth = httpx.FunctionAuth(auth)
    if auth is not None:
        # The handshake is one request: the first step of the auth flow (its headers).
        request = next(auth.auth_flow(request))
    return request


def websocket_scope(driver: Driver, request: httpx.Request) -> Scope:
    """The ``websocket`` scope of ``request``: the HTTP scope's fields, its subprotocols,
    the denial-response extension and a shallow copy of the lifespan state."""
    scope = driver.scope_for(request)
    del scope["method"]
    offered = request.headers.get("sec-websocket-protocol")
    scope["type"] = "websocket"
    scope["subprotocols"] = [] if offered is None else [p.strip() for p in offered.split(",")]
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


class Connection:
    """One WebSocket connection, all of it in the event loop: ``run`` is the app's task,
    ``app_receive``/``app_send`` are the app's ASGI callables, ``put``/``get`` the client's."""

    def __init__(self, driver: Driver, ws_admission: WebSocketAdmission, scope: Scope) -> None:
        self._driver = driver
        self._ws_admission = ws_admission
        self._scope = scope
        to_app: tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]
        to_app = anyio.create_memory_object_stream(math.inf)
        self._to_app_send, self._to_app_receive = to_app
        from_app: tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]
        from_app = anyio.create_memory_object_stream(math.inf)
        self._from_app_send, self._from_app_receive = from_app
        self._disconnect: Message | None = None  # what the app got when the client left
        self.accepted = False
        self.app_closed = False  # the app sent websocket.close (or finished its denial)
        self.client_closed = False  # the client sent websocket.disconnect
        self.finished = False
        self.error: Exception | None = None
        self._error_raised = False
        self._cancel_scope = anyio.CancelScope()

    async def run(self) -> None:
        """The app's task. Never raises an ``Exception``: the app's is kept in ``error``."""
        try:
            with self._cancel_scope:
                await self._ws_admission.admit(
                    self._driver.app, self._scope, self.app_receive, self.app_send
                )
        except Exception as exc:
            self.error = exc
        finally:
            self.finished = True
            self._from_app_send.close()  # the client's ``get`` sees the end

    async def app_receive(self) -> Message:
        if self._disconnect is not None:
            return self._disconnect  # as nea's server: the client is gone, and stays gone
        message = await self._to_app_receive.receive()
        if message["type"] == "websocket.disconnect":
            self._disconnect = message
        return message

    async def app_send(self, message: Message) -> None:
        kind = message.get("type")
        if self.app_closed:
            raise RuntimeError(f"expected nothing after 'websocket.close', got {kind!r}")
        if kind == "websocket.accept":
            if self.accepted:
                raise RuntimeError(
                    "expected 'websocket.send' or 'websocket.close', got a second accept"
                )
            self.accepted = True
        elif kind == "websocket.close" or (
            kind == "websocket.http.response.body" and not message.get("more_body", False)
        ):
            self.app_closed = True
        self._from_app_send.send_nowait(message)

    async def put(self, message: Message) -> None:
        """Give ``message`` to the app; dropped once the app has finished."""
        if message.get("type") == "websocket.disconnect":
            self.client_closed = True
        if not self.finished:
            self._to_app_send.send_nowait(message)

    async def get(self) -> Message:
        """The app's next message. When the app has finished and sent nothing more: its
        exception, or (``raise_server_exceptions=False``, or no exception) the close or
        denial nea's server would answer for it."""
        try:
            return await self._from_app_receive.receive()
        except anyio.EndOfStream:
            pass
        error = self.take_error()
        if error is not None:
            raise error
        if self.accepted:
            code = CLOSE_NORMAL if self.error is None else CLOSE_INTERNAL_ERROR
            return {"type": "websocket.close", "code": code, "reason": ""}
        if self.error is None and self._driver.raise_server_exceptions:
            raise RuntimeError(
                "the app returned without accepting or closing the WebSocket (expected "
                "'websocket.accept' or 'websocket.close'); nea's server answers 500"
            )
        return {"type": _DENIAL, "status": 500, "headers": [], "synthesized": True}

    async def get_checked(self) -> Message:
        """``get``, raising ``WebSocketDisconnect``/``WebSocketDenialResponse`` for a close or
        a denial."""
        message = await self.get()
        kind = message["type"]
        if kind == "websocket.close":
            raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL), message.get("reason", ""))
        if kind == _DENIAL:
            raise await self._denial(message)
        return message

    async def _denial(self, start: Message) -> WebSocketDenialResponse:
        body: list[bytes] = []
        if not start.get("synthesized", False):
            while True:
                message = await self.get()
                if message["type"] != "websocket.http.response.body":
                    raise RuntimeError(
                        "expected 'websocket.http.response.body', got " + repr(message["type"])
                    )
                body.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    break
        return WebSocketDenialResponse(
            status_code=int(start["status"]),
            headers=[(bytes(k), bytes(v)) for k, v in start.get("headers", [])],
            content=b"".join(body),
        )

    def take_error(self) -> Exception | None:
        """The app's exception, once, unless ``raise_server_exceptions=False``."""
        if self.error is None or self._error_raised or not self._driver.raise_server_exceptions:
            return None
        self._error_raised = True
        return self.error

    async def hang_up(self) -> None:
        """The client leaves: a ``websocket.disconnect`` unless it sent one already (an app
        that closed may still be waiting for the client's answer to its close)."""
        if not self.client_closed:
            await self.put({"type": "websocket.disconnect", "code": CLOSE_NORMAL, "reason": None})

    def cancel(self) -> None:
        """Cancel the app if it is still running (the test left the session)."""
        self._cancel_scope.cancel()

    def close_streams(self) -> None:
        streams = (self._to_app_send, self._to_app_receive, self._from_app_send)
        for stream in (*streams, self._from_app_receive):
            stream.close()


def _json(data: Any, mode: Literal["text", "binary"]) -> Message:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if mode == "text":
        return {"type": "websocket.receive", "text": text}
    return {"type": "websocket.receive", "bytes": text.encode("utf-8")}


def _raise_app_error(connection: Connection) -> None:
    error = connection.take_error()
    if error is not None:
        raise error


def _decode_json(message: Message, mode: Literal["text", "binary"]) -> Any:
    return json.loads(message["text"] if mode == "text" else message["bytes"].decode("utf-8"))


class WebSocketSession:
    """A WebSocket connection of ``Client`` (Starlette's ``WebSocketTestSession``): use it
    with ``with``. Entering raises ``WebSocketDisconnect`` (close before accept),
    ``WebSocketDenialResponse`` (a denial response) or the app's exception; the
    ``receive_*`` methods raise ``WebSocketDisconnect`` when the app closed; leaving raises
    the app's exception if the test has not seen it."""

    def __init__(self, owner: Client, scope: Scope) -> None:
        self._owner = owner
        self._scope = scope
        self.accepted_subprotocol: str | None = None
        self.extra_headers: list[tuple[bytes, bytes]] | None = None
        # Set while the session is open (between __enter__ and __exit__).
        self._open: tuple[anyio.from_thread.BlockingPortal, Connection] | None = None
        self._exit: contextlib.ExitStack | None = None

    def __enter__(self) -> WebSocketSession:
        owner = self._owner
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(owner._portal_for_request())
            connection = portal.call(Connection, owner._driver, owner.ws_admission, self._scope)
            stack.callback(setattr, self, "_open", None)
            self._open = (portal, connection)
            stack.callback(portal.call, connection.close_streams)
            task = portal.start_task_soon(connection.run)
            stack.callback(_raise_app_error, connection)
            stack.callback(concurrent.futures.wait, [task])
            # Starlette's order: the disconnect, then a cancel; the portal round trip
            # between them lets the app take the disconnect first.
            stack.callback(portal.call, connection.cancel)
            stack.callback(portal.call, connection.hang_up)
            portal.call(connection.put, {"type": "websocket.connect"})
            message = portal.call(connection.get_checked)
            self.accepted_subprotocol = message.get("subprotocol")
            self.extra_headers = list(message.get("headers", []))
            self._exit = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit = self._exit, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def _live(self) -> tuple[anyio.from_thread.BlockingPortal, Connection]:
        if self._open is None:
            raise RuntimeError("the WebSocket session is not open: use it in a 'with' block")
        return self._open

    def send(self, message: Message) -> None:
        """Give the app a raw ASGI message (``websocket.receive``, ``websocket.disconnect``)."""
        portal, connection = self._live()
        portal.call(connection.put, message)

    def send_text(self, data: str) -> None:
        self.send({"type": "websocket.receive", "text": data})

    def send_bytes(self, data: bytes) -> None:
        self.send({"type": "websocket.receive", "bytes": data})

    def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        self.send(_json(data, mode))

    def close(self, code: int = CLOSE_NORMAL, reason: str | None = None) -> None:
        self.send({"type": "websocket.disconnect", "code": code, "reason": reason})

    def receive(self) -> Message:
        """The app's next raw message (a close is returned, not raised)."""
        portal, connection = self._live()
        return portal.call(connection.get)

    def _receive_checked(self) -> Message:
        portal, connection = self._live()
        return portal.call(connection.get_checked)

    def receive_text(self) -> str:
        return str(self._receive_checked()["text"])

    def receive_bytes(self) -> bytes:
        return bytes(self._receive_checked()["bytes"])

    def receive_json(self, mode: Literal["text", "binary"] = "text") -> Any:
        return _decode_json(self._receive_checked(), mode)


class AsyncWebSocketSession:
    """The async twin of ``WebSocketSession`` for ``AsyncClient``:
    ``async with client.websocket_connect("/ws") as ws: await ws.send_text("hi")``.
    Leaving sends the disconnect and waits for the app to return (it is not cancelled)."""

    def __init__(self, owner: AsyncClient, scope: Scope) -> None:
        self._owner = owner
        self._scope = scope
        self._connection: Connection | None = None  # set by __aenter__
        self._task: Detached | None = None
        self.accepted_subprotocol: str | None = None
        self.extra_headers: list[tuple[bytes, bytes]] | None = None

    async def __aenter__(self) -> AsyncWebSocketSession:
        owner = self._owner
        connection = Connection(owner._driver, owner.ws_admission, self._scope)
        self._connection = connection
        self._task = Detached(connection.run)
        try:
            await connection.put({"type": "websocket.connect"})
            message = await connection.get_checked()
        except BaseException:
            await self._end(connection)
            raise
        self.accepted_subprotocol = message.get("subprotocol")
        self.extra_headers = list(message.get("headers", []))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Unlike the sync session (Starlette's behaviour: cancel right after the
        # disconnect), wait for the app to return, as nea's server does: there is no portal
        # round trip here that would let the app see the disconnect before a cancel.
        connection = self._live()
        try:
            await connection.hang_up()
            if self._task is not None:
                await self._task.wait()
        finally:
            await self._end(connection)  # a no-op cancel unless this task was cancelled
        _raise_app_error(connection)

    async def _end(self, connection: Connection) -> None:
        task, self._task = self._task, None
        self._connection = None
        if task is not None:
            connection.cancel()
            with anyio.CancelScope(shield=True):
                await task.wait()
        connection.close_streams()

    def _live(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the WebSocket session is not open: use it in an 'async with' block")
        return self._connection

    async def send(self, message: Message) -> None:
        await self._live().put(message)

    async def send_text(self, data: str) -> None:
        await self.send({"type": "websocket.receive", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        await self.send(_json(data, mode))

    async def close(self, code: int = CLOSE_NORMAL, reason: str | None = None) -> None:
        await self.send({"type": "websocket.disconnect", "code": code, "reason": reason})

    async def receive(self) -> Message:
        return await self._live().get()

    async def receive_text(self) -> str:
        return str((await self._live().get_checked())["text"])

    async def receive_bytes(self) -> bytes:
        return bytes((await self._live().get_checked())["bytes"])

    async def receive_json(self, mode: Literal["text", "binary"] = "text") -> Any:
        return _decode_json(await self._live().get_checked(), mode)
