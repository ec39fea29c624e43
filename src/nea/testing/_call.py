"""One request of nea's test clients: its scope, the app's task, and the response it streams.

Owns: ``Driver`` (what every request of one client shares: the app, ``Admission``, the
scope options, the lifespan state) and ``Call`` (one request: ``run`` is the app's task,
``receive``/``send`` are the app's ASGI callables, ``next_chunk`` is the client's side of
the body). The body goes from the app to the client through an unbuffered channel, so the
app's ``send`` of a body chunk returns only once the client took it (backpressure, as on a
socket), and a response is available as soon as its ``http.response.start`` is sent.

Must not import the server or the CLI; needs a running event loop for everything but
``Driver``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from nea._admission import Admission
from nea._types import ASGIApp, Headers, Message, Receive, Scope, Send
from nea.meter import Budget

EXTENSION = "nea.budget"
_ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# What nea's server answers for an app exception before the response started; the test
# clients give the same answer when ``raise_server_exceptions=False``.
SERVER_ERROR_BODY = b"Internal Server Error"
_SERVER_ERROR_HEADERS: Headers = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(SERVER_ERROR_BODY)).encode()),
    (b"connection", b"close"),
]


def as_asgi3(app: Any) -> ASGIApp:
    """``app`` itself unless it is an ASGI2 app (``app(scope)`` returns a
    ``(receive, send)`` coroutine function), which gets an ASGI3 wrapper.

    An app is taken for ASGI2 only when it is a class without ``__await__`` (Starlette's
    and uvicorn's rule) or a callable that accepts one argument but not three: an ASGI3
    app that is a plain function returning an awaitable stays ASGI3.
    """
    if inspect.isclass(app):
        is_asgi2 = not hasattr(app, "__await__")
    else:
        try:
            signature = inspect.signature(app)
        except (TypeError, ValueError):  # no signature to read (some builtins)
            return app  # type: ignore[no-any-return]
        is_asgi2 = _accepts(signature, 1) and not _accepts(signature, 3)
    if not is_asgi2:
        return app  # type: ignore[no-any-return]

    async def asgi2(scope: Scope, receive: Receive, send: Send) -> None:
        instance: Callable[[Receive, Send], Awaitable[None]] = app(scope)
        await instance(receive, send)

    return asgi2


def _accepts(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


class Driver:
    """What the requests of one client share. ``app_state`` is the lifespan ``state``
    (Starlette's ``TestClient.app_state``); each request gets a shallow copy of it."""

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
        self.app_state: dict[str, Any] = {}

    def scope_for(self, request: httpx.Request) -> Scope:
        url = request.url
        port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 80)
        return {
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
            "server": (url.host, port),
            # The ASGI extensions the clients implement (nea.budget is added by admission).
            "extensions": {"http.response.trailers": {}, "http.response.debug": {}},
            # A shallow copy of the lifespan state (ASGI spec 2.4).
            "state": dict(self.app_state),
        }


class Call:
    """One request: ``run()`` runs the app (in its own task); the client waits for
    ``answered``, then reads the body with ``next_chunk()`` and ends with
    ``cancel_if_incomplete()`` (or ``cancel()`` when the client closes), ``finished`` and
    ``end_error()``.

    ``extensions`` is the response's ``extensions`` dict: ``nea.budget`` becomes the
    request budget's final statistics when the app returns, so it is final once the body
    was read or the response closed.
    """

    def __init__(self, driver: Driver, request: httpx.Request, body: bytes) -> None:
        self._driver = driver
        self.request = request
        self._body = body
        self._body_sent = False
        self._head = request.method == "HEAD"
        self._chunks_in, self._chunks_out = anyio.create_memory_object_stream[bytes](0)
        self.answered = anyio.Event()  # the response started, or the app finished
        self.finished = anyio.Event()  # the app returned, raised or was cancelled
        self._response_complete = anyio.Event()
        self._cancel_scope = anyio.CancelScope()
        self.status: int | None = None
        self.headers: Headers = []
        self.trailers: Headers = []
        self.trailers_expected = False
        self._body_complete = False
        self.debug: dict[str, Any] | None = None
        self.error: Exception | None = None
        self._budget: Budget | None = None
        self._error_raised = False
        self.extensions: dict[str, Any] = {"http_version": b"HTTP/1.1", EXTENSION: None}

    async def run(self) -> None:
        """The app's task. Never raises an ``Exception``: the app's is kept in ``error``."""
        seen: list[Budget] = []
        try:
            with self._cancel_scope:
                async with self._chunks_in:  # closing it ends the client's body
                    try:
                        await self._driver.admission.admit(
                            self._driver.app,
                            self._driver.scope_for(self.request),
                            self.receive,
                            self.send,
                            on_budget=seen.append,
                        )
                    except Exception as exc:
                        self.error = exc
        finally:
            self._budget = seen[0] if seen else None
            if self._budget is not None:
                self.extensions[EXTENSION] = self._budget.statistics()
            self._response_complete.set()
            self.answered.set()
            self.finished.set()

    def cancel(self) -> None:
        """Cancel the app if it is still running (the client closed the response)."""
        self._cancel_scope.cancel()

    def cancel_if_incomplete(self) -> None:
        """Cancel the app if its response is not complete: a client that hangs up early.
        An app whose response is complete runs on (Starlette background tasks) and is
        waited for, as a server lets it finish after the response went out."""
        if not self._response_complete.is_set():
            self._cancel_scope.cancel()

    async def receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        # After the body the client is "connected" until the response is complete, as a
        # real client is; then, as under nea's server, the app sees it gone (no wait, so
        # Starlette's ``is_disconnected()`` says True at once).
        if not self._response_complete.is_set():
            await self._response_complete.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("expected 'http.response.body', got a second response start")
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            self.trailers_expected = bool(message.get("trailers", False))
            self.answered.set()
        elif kind == "http.response.body":
            await self._send_body(message)
        elif kind == "http.response.trailers":
            self._take_trailers(message)
        elif kind == "http.response.debug":
            self.debug = message["info"]
        elif kind == "http.response.push":
            pass  # a hint that servers may ignore (ASGI HTTP/2 server push)
        else:
            raise RuntimeError(f"expected an 'http.response.*' message, got {kind!r}")

    async def _send_body(self, message: Message) -> None:
        if self.status is None:
            raise RuntimeError("expected 'http.response.start', got 'http.response.body'")
        if self._body_complete:
            raise RuntimeError(
                "got 'http.response.body' after the body was complete (its last message "
                "had no 'more_body')"
            )
        body = b"" if self._head else bytes(message.get("body", b""))  # a copy: the app
        # may reuse its buffer. As nea's server, no body on a HEAD response. Empty pieces
        # go through too (the reader skips them), so every ``send`` waits for the reader.
        await self._chunks_in.send(body)
        if not message.get("more_body", False):
            self._body_complete = True
            if not self.trailers_expected:
                self._response_complete.set()

    def _take_trailers(self, message: Message) -> None:
        if not self.trailers_expected:
            raise RuntimeError(
                "got 'http.response.trailers' without declaring trailers "
                "(expected 'trailers': True in 'http.response.start')"
            )
        if not self._body_complete:
            raise RuntimeError("got 'http.response.trailers' before the body was complete")
        if self._response_complete.is_set():
            raise RuntimeError("got 'http.response.trailers' after the response was complete")
        self.trailers.extend((bytes(k), bytes(v)) for k, v in message.get("headers", []))
        if not message.get("more_trailers", False):
            self._response_complete.set()

    def head_error(self) -> BaseException | None:
        """Once ``answered``: what to raise instead of a response, if anything.

        An app that finished without starting a response raised (its exception is raised
        unless ``raise_server_exceptions=False``) or returned without answering; without
        raising, the client answers what nea's server answers: a plain 500.
        """
        if self.status is not None:
            return None
        if self._driver.raise_server_exceptions:
            if self.error is not None:
                self._error_raised = True
                return self.error
            return RuntimeError(
                "the app returned without sending a response (expected an "
                "'http.response.start' message); nea's server answers 500"
            )
        self.status, self.headers = 500, list(_SERVER_ERROR_HEADERS)
        return None

    @property
    def synthesized_body(self) -> bytes | None:
        """The body of the client's own 500 (see ``head_error``), else ``None``."""
        return SERVER_ERROR_BODY if self.headers == _SERVER_ERROR_HEADERS else None

    async def next_chunk(self) -> bytes | None:
        """The next non-empty piece of the body, ``None`` at its end.

        At the end, raises what the app's failure means for the client: a budget trip
        after the response started aborts the response (``httpx.RemoteProtocolError``,
        as nea's server aborts the connection); another exception is raised as it is
        unless ``raise_server_exceptions=False`` (then the partial response stands).
        """
        try:
            while not (chunk := await self._chunks_out.receive()):
                pass
            return chunk
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        await self.finished.wait()
        error = self.end_error()
        if error is not None:
            raise error
        return None

    def end_error(self) -> BaseException | None:
        error = self.error
        if error is None or self._error_raised:
            return None
        self._error_raised = True
        if self._budget is not None and self._budget.tripped:
            return httpx.RemoteProtocolError(
                "the server aborted the response: the request exceeded its memory "
                f"budget after the response started ({error})",
                request=self.request,
            )
        return error if self._driver.raise_server_exceptions else None

    def close_reader(self) -> None:
        self._chunks_out.close()

    def response(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> httpx.Response:
        """The httpx response for the started response, reading its body from ``stream``."""
        response = httpx.Response(
            status_code=self.status or 500,  # set by now: see head_error
            headers=self.headers,
            stream=stream,
            request=self.request,
        )
        # The call's own dict (httpx copies what it is given): ``nea.budget`` is filled in
        # when the app returns, which may be after this response was handed out.
        response.extensions = self.extensions
        if self.trailers_expected:
            # The same list the trailers are added to while the body is read.
            response.extensions["http.response.trailers"] = self.trailers
        if self.debug is not None:
            # Starlette's Jinja2Templates reports the template and its context this way.
            response.extensions["http.response.debug"] = self.debug
            if "template" in self.debug:
                response.template = self.debug["template"]  # type: ignore[attr-defined]
            if "context" in self.debug:
                response.context = self.debug["context"]  # type: ignore[attr-defined]
        return response
