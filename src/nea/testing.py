"""Test clients that run an ASGI app's requests through nea's admission, in process.

Owns: ``Client`` (sync, on ``httpx.Client``) and ``AsyncClient`` (on ``httpx.AsyncClient``),
their transports, and the lifespan driver they share. Every request goes through
``nea._admission.Admission`` -- the same slots, per-request budget and 500/503 responses
as nea's server -- and its response carries the request budget's final
``BudgetStatistics`` in ``response.extensions["nea.budget"]``.

Users import this module explicitly (``from nea.testing import Client``): it imports httpx,
so ``nea/__init__.py`` must not import it. Must not import the server or the CLI.

The sync ``Client`` runs the app on an event loop in a portal thread
(``anyio.from_thread.start_blocking_portal``): one loop for the whole ``with`` block, or
one per request when the client is used without ``with`` (then lifespan does not run).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.from_thread

try:
    import httpx
except ImportError as exc:  # httpx is not one of nea's runtime dependencies
    raise ImportError(
        "nea.testing needs httpx, which is not installed; install it with "
        "pip install 'nea[testing]' (or pip install httpx)"
    ) from exc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from nea._admission import Admission
from nea._errors import ConfigError, NeaError
from nea._types import ASGIApp, Headers, Message, Scope
from nea.meter import Budget

__all__ = ["AsyncClient", "Client", "LifespanError"]

LifespanMode = Literal["auto", "on", "off"]
EXTENSION = "nea.budget"
_ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
# What nea's server answers for an app exception before the response started; the test
# clients give the same answer when ``raise_server_exceptions=False``.
_SERVER_ERROR_BODY = b"Internal Server Error"


class LifespanError(NeaError):
    """The app's lifespan startup or shutdown failed (or, with ``lifespan="on"``, the app
    does not speak the lifespan protocol). The message carries the app's own message."""


class _Driver:
    """Runs one request of ``app`` through ``admission`` and builds the httpx response."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        *,
        root_path: str,
        client: tuple[str, int],
        raise_server_exceptions: bool,
    ) -> None:
        self.app = app
        self.admission = admission
        self.root_path = root_path
        self.client = client
        self.raise_server_exceptions = raise_server_exceptions
        self.state: dict[str, Any] | None = None  # set by lifespan startup

    def scope_for(self, request: httpx.Request) -> Scope:
        url = request.url
        default_port = {"http": 80, "https": 443}.get(url.scheme, 80)
        scope: Scope = {
            "type": "http",
            "asgi": dict(_ASGI_VERSION),
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": self.root_path,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": self.client,
            "server": (url.host, url.port or default_port),
            "extensions": {},
        }
        if self.state is not None:
            # Each request gets a shallow copy of the lifespan state (ASGI spec 2.4).
            scope["state"] = dict(self.state)
        return scope

    async def handle(self, request: httpx.Request, body: bytes) -> httpx.Response:
        """Run ``request`` (whose body is ``body``) and return the complete response."""
        exchange = _Exchange(body)
        # Admission hands over the request's budget before the app runs, so its statistics
        # can be reported even when the app raises.
        seen: list[Budget] = []
        try:
            await self.admission.admit(
                self.app,
                self.scope_for(request),
                exchange.receive,
                exchange.send,
                on_budget=seen.append,
            )
        except Exception as exc:
            budget = seen[0] if seen else None
            if budget is not None and budget.tripped:
                # A trip after the response started: the server aborts the connection.
                raise httpx.RemoteProtocolError(
                    "the server aborted the response: the request exceeded its memory "
                    f"budget after the response started ({exc})",
                    request=request,
                ) from exc
            if self.raise_server_exceptions:
                raise
            if exchange.status is None:
                exchange.answer_server_error()
            elif not exchange.complete:
                raise httpx.RemoteProtocolError(
                    f"the server aborted the response: the app raised {exc!r} after "
                    "the response started",
                    request=request,
                ) from exc
            # else: the app answered (e.g. Starlette's error page) and raised afterwards.
        finally:
            exchange.finish()
        if exchange.status is None:
            if self.raise_server_exceptions:
                raise RuntimeError(
                    "the app returned without sending a response (expected an "
                    "'http.response.start' message); nea's server answers 500"
                )
            exchange.answer_server_error()
        budget = seen[0] if seen else None
        return httpx.Response(
            status_code=exchange.status or 500,  # never None here: answered above
            headers=exchange.headers,
            stream=httpx.ByteStream(b"".join(exchange.body)),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                EXTENSION: budget.statistics() if budget is not None else None,
            },
        )


class _Exchange:
    """The ``receive``/``send`` pair of one request and the response it collects."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._body_sent = False
        self._done = anyio.Event()
        self.status: int | None = None
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.complete = False

    async def receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        # After the body the client is "connected" until the response is complete, as a
        # real client is: apps waiting for a disconnect wait that long.
        await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("expected 'http.response.body', got a second response start")
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("expected 'http.response.start', got 'http.response.body'")
            self.body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self.complete = True
                self._done.set()
        else:
            raise RuntimeError(f"expected an 'http.response.*' message, got {kind!r}")

    def answer_server_error(self) -> None:
        self.status = 500
        self.headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(_SERVER_ERROR_BODY)).encode()),
            (b"connection", b"close"),
        ]
        self.body = [_SERVER_ERROR_BODY]
        self.complete = True

    def finish(self) -> None:
        self._done.set()


class _Lifespan:
    """Drives the ASGI lifespan protocol: ``run`` is the app's task, ``startup`` and
    ``shutdown`` are called from the client while ``run`` is running."""

    def __init__(self, app: ASGIApp, mode: LifespanMode) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self.supported = True
        self.error: Exception | None = None
        to_app: tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]
        to_app = anyio.create_memory_object_stream(math.inf)
        self._to_app_send, self._to_app_receive = to_app
        from_app: tuple[
            MemoryObjectSendStream[Message | None], MemoryObjectReceiveStream[Message | None]
        ]
        from_app = anyio.create_memory_object_stream(math.inf)
        self._from_app_send, self._from_app_receive = from_app

    async def run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": dict(_ASGI_VERSION), "state": self.state}
        try:
            await self.app(scope, self._to_app_receive.receive, self._send)
        except Exception as exc:
            self.error = exc
        finally:
            # ``None`` tells the waiting side that the app returned.
            with contextlib.suppress(anyio.BrokenResourceError):
                self._from_app_send.send_nowait(None)
            self._from_app_send.close()
            self._to_app_receive.close()

    def close(self) -> None:
        """Close the client's ends of the streams (idempotent); ``run`` closes the app's."""
        self._to_app_send.close()
        self._from_app_receive.close()

    async def _send(self, message: Message) -> None:
        self._from_app_send.send_nowait(message)

    async def startup(self) -> None:
        self._tell_app({"type": "lifespan.startup"})
        message = await self._from_app_receive.receive()
        if message is None:
            # The app returned or raised without answering: it does not do lifespan.
            self.supported = False
            if self.mode == "on":
                raise LifespanError(
                    "lifespan='on' but the app returned without answering 'lifespan.startup'"
                    + (f" (it raised {self.error!r})" if self.error else "")
                ) from self.error
            return
        self._expect(message, "startup")

    async def shutdown(self) -> None:
        if not self.supported:
            return
        self._tell_app({"type": "lifespan.shutdown"})
        message = await self._from_app_receive.receive()
        if message is None:
            raise LifespanError(
                "the app returned without answering 'lifespan.shutdown'"
                + (f" (it raised {self.error!r})" if self.error else "")
            ) from self.error
        self._expect(message, "shutdown")

    def _tell_app(self, message: Message) -> None:
        # An app that already returned closed its end; the ``None`` it left says so.
        with contextlib.suppress(anyio.BrokenResourceError):
            self._to_app_send.send_nowait(message)

    def _expect(self, message: Message, phase: str) -> None:
        kind = message.get("type")
        if kind == f"lifespan.{phase}.failed":
            raise LifespanError(f"lifespan {phase} failed: {message.get('message', '')}")
        if kind != f"lifespan.{phase}.complete":
            raise LifespanError(
                f"expected 'lifespan.{phase}.complete' or 'lifespan.{phase}.failed', got {kind!r}"
            )


def _check_lifespan(mode: str) -> LifespanMode:
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"lifespan: expected 'auto', 'on' or 'off', got {mode!r}")
    return mode  # type: ignore[return-value]


def _make_driver(
    app: ASGIApp,
    budget: int | str | None,
    slots: int | None,
    queue: int | None,
    queue_timeout: float,
    root_path: str,
    client: tuple[str, int],
    raise_server_exceptions: bool,
) -> _Driver:
    admission = Admission(budget=budget, slots=slots, queue=queue, queue_timeout=queue_timeout)
    return _Driver(
        app,
        admission,
        root_path=root_path,
        client=client,
        raise_server_exceptions=raise_server_exceptions,
    )


class _Detached:
    """A task that is not bound to the task that started it.

    ``AsyncClient`` runs the app's lifespan in one: a task group would have to be entered
    and left in the same task, and pytest-asyncio runs an async fixture's setup and
    teardown in two different tasks.
    """

    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self._cancel_scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._task: asyncio.Task[None] | None = None

        async def main() -> None:
            try:
                with self._cancel_scope:
                    await run()
            finally:
                self._done.set()

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(main())
        else:  # trio: a system task belongs to the run, not to a task
            import importlib

            trio: Any = importlib.import_module("trio")
            trio.lowlevel.spawn_system_task(main)

    async def wait(self) -> None:
        await self._done.wait()

    def cancel(self) -> None:
        self._cancel_scope.cancel()


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, owner: Client) -> None:
        self._owner = owner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        with self._owner._portal_for_request() as portal:
            return portal.call(self._owner._driver.handle, request, body)


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, driver: _Driver) -> None:
        self._driver = driver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        return await self._driver.handle(request, body)


class Client(httpx.Client):
    """A sync test client whose requests run through nea's slots and memory budgets.

    ``budget`` is each request's memory budget (bytes or a size such as ``"32MiB"``;
    ``None`` runs requests without one), ``slots``/``queue``/``queue_timeout`` mean what
    they mean for nea's server. A request that exceeds its budget before its response
    started gets nea's ``500 Internal Server Error: Out of Memory``; one that exceeds it
    after the response started raises ``httpx.RemoteProtocolError`` (the server aborts
    the connection). Every response has ``response.extensions["nea.budget"]``: the request
    budget's final ``nea.BudgetStatistics`` (``None`` when the request never ran under a
    budget, e.g. a 503).

    Use it as a context manager to run the app's lifespan (``lifespan="auto"|"on"|"off"``)
    and keep one event loop for all requests (needed to exercise ``slots`` from several
    threads). Without ``with`` each request runs on a fresh event loop and lifespan does
    not run, as with Starlette's ``TestClient``. App exceptions are raised in the test
    unless ``raise_server_exceptions=False`` (then the response is a plain 500).
    Invalid options raise ``nea.ConfigError``.
    """

    def __init__(
        self,
        app: ASGIApp,
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
    ) -> None:
        self._driver = _make_driver(
            app, budget, slots, queue, queue_timeout, root_path, client, raise_server_exceptions
        )
        self._lifespan_mode = _check_lifespan(lifespan)
        self._backend = backend
        self._backend_options = backend_options
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._stack: contextlib.ExitStack | None = None
        super().__init__(
            base_url=base_url,
            headers=headers,
            cookies=cookies,
            follow_redirects=follow_redirects,
            transport=_SyncTransport(self),
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

    def __enter__(self) -> Client:
        super().__enter__()
        try:
            self._start()
        except BaseException:
            super().__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        """Start the portal and the lifespan; leaves ``self._stack`` to undo both."""
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(
                anyio.from_thread.start_blocking_portal(self._backend, self._backend_options)
            )
            if self._lifespan_mode != "off":
                lifespan = _Lifespan(self._driver.app, self._lifespan_mode)
                stack.callback(lifespan.close)
                task: Future[None] = portal.start_task_soon(lifespan.run)
                # A failed startup leaves the portal with an exception, which cancels
                # the lifespan task; only a started app is shut down and waited for.
                portal.call(lifespan.startup)
                stack.callback(task.result)
                stack.callback(portal.call, lifespan.shutdown)
                if lifespan.supported:
                    self._driver.state = lifespan.state
            self._portal = portal
            self._stack = stack.pop_all()

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._portal = None
        try:
            if stack is not None:
                # Shutdown, wait for the lifespan task, stop the portal (in that order).
                stack.__exit__(exc_type, exc, tb)
        finally:
            self._driver.state = None
            super().__exit__(exc_type, exc, tb)


class AsyncClient(httpx.AsyncClient):
    """The async twin of ``Client`` (same options and behaviour, minus ``backend``):
    requests run in the caller's event loop, through nea's slots and memory budgets.

    ``async with AsyncClient(app) as client:`` runs the app's lifespan; it may be entered
    and left in different tasks (as pytest-asyncio does with async fixtures).
    """

    def __init__(
        self,
        app: ASGIApp,
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
    ) -> None:
        self._driver = _make_driver(
            app, budget, slots, queue, queue_timeout, root_path, client, raise_server_exceptions
        )
        self._lifespan_mode = _check_lifespan(lifespan)
        self._lifespan: _Lifespan | None = None
        self._lifespan_task: _Detached | None = None
        super().__init__(
            base_url=base_url,
            headers=headers,
            cookies=cookies,
            follow_redirects=follow_redirects,
            transport=_AsyncTransport(self._driver),
        )

    async def __aenter__(self) -> AsyncClient:
        await super().__aenter__()
        if self._lifespan_mode == "off":
            return self
        lifespan = _Lifespan(self._driver.app, self._lifespan_mode)
        task = _Detached(lifespan.run)
        try:
            await lifespan.startup()
        except BaseException:
            task.cancel()
            await task.wait()
            lifespan.close()
            await super().__aexit__(None, None, None)
            raise
        self._lifespan, self._lifespan_task = lifespan, task
        if lifespan.supported:
            self._driver.state = lifespan.state
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        lifespan, self._lifespan = self._lifespan, None
        task, self._lifespan_task = self._lifespan_task, None
        try:
            if lifespan is not None and task is not None:
                try:
                    await lifespan.shutdown()
                finally:
                    await task.wait()
                    lifespan.close()
        finally:
            self._driver.state = None
            await super().__aexit__(exc_type, exc, tb)
