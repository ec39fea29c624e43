"""Test clients that run an ASGI app's requests through nea's admission, in process.

Owns: ``Client`` (sync, on ``httpx.Client``) and ``AsyncClient`` (on ``httpx.AsyncClient``)
and their transports; one request is a ``_call.Call``, the lifespan is ``_lifespan``.
Every request goes through ``nea._admission.Admission`` -- the same slots, per-request
budget and 500/503 responses as nea's server -- and its response carries the request
budget's final ``BudgetStatistics`` in ``response.extensions["nea.budget"]``.

``Client`` is meant as a drop-in for Starlette's ``TestClient`` (same keyword options,
``with`` semantics, streamed responses, lifespan errors, ``app_state``, trailers and
``http.response.debug`` extensions, ``websocket_connect``). WebSocket sessions are
``_websocket``'s; they run through ``nea._ws_admission.WebSocketAdmission`` (``ws_budget``,
``ws_slots``), as under nea's server.

Users import this package explicitly (``from nea.testing import Client``): it imports
httpx, so ``nea/__init__.py`` must not import it. Must not import the server or the CLI.

The sync ``Client`` runs the app on an event loop in a portal thread
(``anyio.from_thread.start_blocking_portal``): one loop for the whole ``with`` block, or
one per request when the client is used without ``with`` (then lifespan does not run).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread

try:
    import httpx
except ImportError as exc:  # httpx is not one of nea's runtime dependencies
    raise ImportError(
        "nea.testing needs httpx, which is not installed; install it with "
        "pip install 'nea[testing]' (or pip install httpx)"
    ) from exc

from nea._admission import Admission
from nea._ws_admission import WebSocketAdmission
from nea.testing._call import Call, Driver, as_asgi3
from nea.testing._lifespan import Detached, Lifespan, LifespanError, check_lifespan
from nea.testing._websocket import (
    AsyncWebSocketSession,
    WebSocketDenialResponse,
    WebSocketDisconnect,
    WebSocketSession,
    websocket_request,
    websocket_scope,
)

__all__ = [
    "AsyncClient",
    "AsyncWebSocketSession",
    "Client",
    "LifespanError",
    "WebSocketDenialResponse",
    "WebSocketDisconnect",
    "WebSocketSession",
]

# Starlette's TestClient sends this user-agent; apps and their tests may look for it.
USER_AGENT = "testclient"


class _Serving:
    """What both clients set up alike: the app behind nea's admission (``_driver``), its
    WebSocket pool, and the lifespan mode."""

    def _serve(
        self,
        app: Any,
        budget: int | str | None,
        slots: int | None,
        queue: int | None,
        queue_timeout: float,
        root_path: str,
        client: tuple[str, int],
        raise_server_exceptions: bool,
        ws_budget: int | str | None,
        ws_slots: int | None,
        lifespan: str,
    ) -> None:
        admission = Admission(budget=budget, slots=slots, queue=queue, queue_timeout=queue_timeout)
        self._driver = Driver(
            as_asgi3(app),
            admission,
            root_path=root_path,
            client=client,
            raise_server_exceptions=raise_server_exceptions,
        )
        #: The WebSocket pool (``ws_slots``) and per-connection budget (``ws_budget``).
        self.ws_admission = WebSocketAdmission(budget=ws_budget, slots=ws_slots)
        self.app = self._driver.app
        #: The lifespan ``state`` (Starlette's ``TestClient.app_state``); every request's
        #: ``scope["state"]`` is a shallow copy of it.
        self.app_state = self._driver.app_state
        self._lifespan_mode = check_lifespan(lifespan)


def _headers(headers: Mapping[str, str] | None) -> httpx.Headers:
    merged = httpx.Headers(headers)
    merged.setdefault("user-agent", USER_AGENT)
    return merged


class _SyncBody(httpx.SyncByteStream):
    """A response body read from the app as the test iterates it. Closing it cancels an
    app that has not finished its response, waits for the app to return (background
    tasks included) and raises the app's exception if the reader has not seen it."""

    def __init__(
        self,
        call: Call,
        portal: anyio.from_thread.BlockingPortal,
        cleanup: contextlib.ExitStack,
        on_close: Callable[[_SyncBody], None],
    ) -> None:
        self._call = call
        self._portal = portal
        self._cleanup = cleanup
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._portal.call(self._call.next_chunk)) is not None:
            yield chunk

    def close(self) -> None:
        """Cancel the app if its response is incomplete, wait for it, and raise its
        exception if the reader has not seen it yet (see ``Call.end_error``)."""
        self._on_close(self)
        self._cleanup.close()  # idempotent: cancel if incomplete, wait, leave the portal
        error = self._call.end_error()
        if error is not None:
            raise error

    def abort(self) -> None:
        """Close, cancelling the app even if its response is complete (the client is
        being closed: background work still running is abandoned)."""
        self._portal.call(self._call.cancel)
        self.close()


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, owner: Client) -> None:
        self._owner = owner
        self._open: set[_SyncBody] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        driver = self._owner._driver
        with contextlib.ExitStack() as cleanup:
            portal = cleanup.enter_context(self._owner._portal_for_request())
            call: Call = portal.call(Call, driver, request, body)
            # Run in reverse: cancel an incomplete response's app, wait for the app, then
            # close the body channel (closing it first would break a pending send).
            cleanup.callback(portal.call, call.close_reader)
            app_task = portal.start_task_soon(call.run)
            cleanup.callback(concurrent.futures.wait, [app_task])
            cleanup.callback(portal.call, call.cancel_if_incomplete)
            portal.call(call.answered.wait)
            error = call.head_error()
            if error is not None:
                raise error
            synthesized = call.synthesized_body
            if synthesized is not None:
                return call.response(httpx.ByteStream(synthesized))
            stream = _SyncBody(call, portal, cleanup.pop_all(), self._open.discard)
            self._open.add(stream)
            return call.response(stream)

    def close(self) -> None:
        """Close the responses still open, cancelling their apps (background work
        included), as closing the client or leaving its ``with`` block does."""
        with contextlib.ExitStack() as stack:
            for stream in list(self._open):
                stack.callback(stream.abort)


class Client(_Serving, httpx.Client):
    """A sync test client whose requests run through nea's slots and memory budgets.

    ``budget`` is each request's memory budget (bytes or a size such as ``"32MiB"``;
    ``None`` runs requests without one), ``slots``/``queue``/``queue_timeout`` mean what
    they mean for nea's server. A request that exceeds its budget before its response
    started gets nea's ``500 Internal Server Error: Out of Memory``; one that exceeds it
    after the response started raises ``httpx.RemoteProtocolError`` when its body is read
    (the server aborts the connection). Every response has
    ``response.extensions["nea.budget"]``: the request budget's final
    ``nea.BudgetStatistics`` once the body was read or the response closed (``None``
    when the request never ran under a budget, e.g. a 503).

    Use it as a context manager to run the app's lifespan (``lifespan="auto"|"on"|"off"``)
    and keep one event loop for all requests (needed to exercise ``slots`` from several
    threads). Without ``with`` each request runs on a fresh event loop and lifespan does
    not run, as with Starlette's ``TestClient``. One instance may be used without
    ``with``, then entered, left and entered again. App exceptions are raised in the test
    unless ``raise_server_exceptions=False``. If the app raises during lifespan, entering
    raises that exception. Invalid options raise ``nea.ConfigError``.

    ``websocket_connect`` opens a WebSocket session, as nea's server runs one: in a pool of
    ``ws_slots`` connections (``None``: no limit; a full pool denies with 503), each inside
    its own budget of ``ws_budget`` for its whole life (``None``: none); a connection that
    exceeds it is closed with 1011 (``WebSocketDisconnect`` with ``code == 1011``).
    """

    __test__ = False  # not a test class, despite the name pytest may see it under

    def __init__(
        self,
        app: Any,
        budget: int | str | None = "32MiB",
        slots: int | None = None,
        *,
        queue: int | None = None,
        queue_timeout: float = 10.0,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        root_path: str = "",
        lifespan: str = "auto",
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: httpx.Cookies | dict[str, str] | None = None,
        follow_redirects: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
        ws_budget: int | str | None = None,
        ws_slots: int | None = None,
    ) -> None:
        self._serve(
            app,
            budget,
            slots,
            queue,
            queue_timeout,
            root_path,
            client,
            raise_server_exceptions,
            ws_budget,
            ws_slots,
            lifespan,
        )
        self._backend = backend
        self._backend_options = backend_options
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._stack: contextlib.ExitStack | None = None
        self._nea_transport = _SyncTransport(self)
        super().__init__(
            base_url=base_url,
            headers=_headers(headers),
            cookies=cookies,
            follow_redirects=follow_redirects,
            transport=self._nea_transport,
        )

    @contextlib.contextmanager
    def _portal_for_request(self) -> Iterator[anyio.from_thread.BlockingPortal]:
        if self._portal is not None:
            yield self._portal
            return
        with anyio.from_thread.start_blocking_portal(
            self._backend, self._backend_options
        ) as portal:
            yield portal

    def websocket_connect(
        self, url: str, subprotocols: Sequence[str] | None = None, **kwargs: Any
    ) -> WebSocketSession:
        """A WebSocket session with the app, to use with ``with`` (Starlette's
        ``TestClient.websocket_connect``); ``headers``, ``params`` and ``cookies`` are
        accepted. See ``WebSocketSession`` for what it raises."""
        request = websocket_request(self, url, subprotocols, kwargs)
        scope = websocket_scope(self._driver, request)
        return WebSocketSession(self, scope)

    def __enter__(self) -> Client:
        # httpx's own ``__enter__`` is not called: it allows one ``with`` per instance,
        # and this client holds nothing httpx would open.
        if self._stack is not None:
            raise RuntimeError("this Client's with block is already running; leave it first")
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(
                anyio.from_thread.start_blocking_portal(self._backend, self._backend_options)
            )
            stack.callback(setattr, self, "_portal", None)
            if self._lifespan_mode != "off":
                self._start_lifespan(portal, stack)
            self._portal = portal
            stack.callback(self._nea_transport.close)  # runs first on exit
            self._stack = stack.pop_all()
        return self

    def _start_lifespan(
        self, portal: anyio.from_thread.BlockingPortal, stack: contextlib.ExitStack
    ) -> None:
        lifespan = Lifespan(self._driver.app, self._lifespan_mode, self._driver.app_state)
        stack.callback(lifespan.close)
        task = portal.start_task_soon(lifespan.run)
        # A failed startup leaves the portal with an exception, which cancels the
        # lifespan task; only a started app is shut down and waited for.
        portal.call(lifespan.startup)
        stack.callback(task.result)
        stack.callback(portal.call, lifespan.shutdown)

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Close open responses, run the lifespan shutdown, stop the event loop. The
        client stays usable (without lifespan) and may be entered again."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)


class _AsyncBody(httpx.AsyncByteStream):
    """The async twin of ``_SyncBody``."""

    def __init__(self, call: Call, task: Detached, on_close: Callable[[_AsyncBody], None]) -> None:
        self._call = call
        self._task = task
        self._on_close = on_close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self  # not an async generator: nothing for trio to finalize if abandoned

    async def __anext__(self) -> bytes:
        chunk = await self._call.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._on_close(self)
        self._call.cancel_if_incomplete()
        with anyio.CancelScope(shield=True):
            await self._task.wait()
        self._call.close_reader()
        error = self._call.end_error()
        if error is not None:
            raise error

    async def abort(self) -> None:
        """The async twin of ``_SyncBody.abort``."""
        self._call.cancel()
        await self.aclose()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._open: set[_AsyncBody] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        call = Call(self._driver, request, body)
        task = Detached(call.run)
        try:
            await call.answered.wait()
            error = call.head_error()
            if error is not None:
                raise error
        except BaseException:
            call.cancel()
            with anyio.CancelScope(shield=True):
                await task.wait()
            raise
        synthesized = call.synthesized_body
        if synthesized is not None:
            await task.wait()
            return call.response(httpx.ByteStream(synthesized))
        stream = _AsyncBody(call, task, self._open.discard)
        self._open.add(stream)
        return call.response(stream)

    async def aclose(self) -> None:
        for stream in list(self._open):
            await stream.abort()


class AsyncClient(_Serving, httpx.AsyncClient):
    """The async twin of ``Client`` (same options and behaviour, minus ``backend``):
    requests run in the caller's event loop, through nea's slots and memory budgets.

    ``async with AsyncClient(app) as client:`` runs the app's lifespan; it may be entered
    and left in different tasks (as pytest-asyncio does with async fixtures), and an
    instance may be entered again after leaving.
    """

    def __init__(
        self,
        app: Any,
        budget: int | str | None = "32MiB",
        slots: int | None = None,
        *,
        queue: int | None = None,
        queue_timeout: float = 10.0,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        root_path: str = "",
        lifespan: str = "auto",
        headers: Mapping[str, str] | None = None,
        cookies: httpx.Cookies | dict[str, str] | None = None,
        follow_redirects: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
        ws_budget: int | str | None = None,
        ws_slots: int | None = None,
    ) -> None:
        self._serve(
            app,
            budget,
            slots,
            queue,
            queue_timeout,
            root_path,
            client,
            raise_server_exceptions,
            ws_budget,
            ws_slots,
            lifespan,
        )
        self._lifespan: Lifespan | None = None
        self._lifespan_task: Detached | None = None
        self._nea_transport = _AsyncTransport(self._driver)
        super().__init__(
            base_url=base_url,
            headers=_headers(headers),
            cookies=cookies,
            follow_redirects=follow_redirects,
            transport=self._nea_transport,
        )

    def websocket_connect(
        self, url: str, subprotocols: Sequence[str] | None = None, **kwargs: Any
    ) -> AsyncWebSocketSession:
        """The async twin of ``Client.websocket_connect``: use it with ``async with``."""
        request = websocket_request(self, url, subprotocols, kwargs)
        scope = websocket_scope(self._driver, request)
        return AsyncWebSocketSession(self, scope)

    async def __aenter__(self) -> AsyncClient:
        # httpx's own ``__aenter__`` is not called (see ``Client.__enter__``).
        if self._lifespan_mode == "off":
            return self
        lifespan = Lifespan(self._driver.app, self._lifespan_mode, self._driver.app_state)
        task = Detached(lifespan.run)
        try:
            await lifespan.startup()
        except BaseException:
            task.cancel()
            with anyio.CancelScope(shield=True):
                await task.wait()
            lifespan.close()
            raise
        self._lifespan, self._lifespan_task = lifespan, task
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        lifespan, self._lifespan = self._lifespan, None
        task, self._lifespan_task = self._lifespan_task, None
        await self._nea_transport.aclose()
        if lifespan is not None and task is not None:
            try:
                await lifespan.shutdown()
            finally:
                await task.wait()
                lifespan.close()
