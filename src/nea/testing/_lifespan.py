"""The ASGI lifespan protocol as nea's test clients drive it, and the detached tasks that
``AsyncClient`` runs the lifespan and its requests in.

Owns: ``LifespanError``, ``Lifespan`` (startup and shutdown from the client's side while
``run`` is the app's task), ``Detached``. Must not import the server or the CLI.

Failures are Starlette's TestClient's: when the app raises, the client raises the app's
own exception (its traceback intact); ``LifespanError`` is for failures that come with no
exception (a ``lifespan.*.failed`` message from an app that then returned normally, or
an app that returned without answering under ``lifespan="on"``). Unlike nea's server,
which follows the ASGI spec and carries on without lifespan, an app that *raises* on the
lifespan scope fails the client's ``with`` even under ``lifespan="auto"``: a test should
not run against an app whose startup silently did not happen. ``lifespan="off"`` is for
apps that do not speak the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from nea._errors import ConfigError, NeaError
from nea._types import ASGIApp, Message, Scope

LifespanMode = Literal["auto", "on", "off"]
_ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


class LifespanError(NeaError):
    """The app's lifespan startup or shutdown failed without raising an exception of its
    own (a ``lifespan.*.failed`` message, then a normal return), or, with
    ``lifespan="on"``, the app returned without answering. The message carries the
    app's own message. When the app raises, the clients raise the app's exception."""


def check_lifespan(mode: str) -> LifespanMode:
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"lifespan: expected 'auto', 'on' or 'off', got {mode!r}")
    return mode  # type: ignore[return-value]


class Lifespan:
    """Drives the ASGI lifespan protocol: ``run`` is the app's task, ``startup`` and
    ``shutdown`` are called from the client while ``run`` is running. ``state`` is the
    lifespan scope's ``state`` (the client's ``app_state``)."""

    def __init__(self, app: ASGIApp, mode: LifespanMode, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
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
            if self.error is not None:
                raise self.error
            # The app returned without answering: it does not do lifespan.
            self.supported = False
            if self.mode == "on":
                raise LifespanError(
                    "lifespan='on' but the app returned without answering 'lifespan.startup'"
                )
            return
        await self._expect(message, "startup")

    async def shutdown(self) -> None:
        if not self.supported:
            return
        self._tell_app({"type": "lifespan.shutdown"})
        message = await self._from_app_receive.receive()
        if message is None:
            if self.error is not None:
                raise self.error
            raise LifespanError("the app returned without answering 'lifespan.shutdown'")
        await self._expect(message, "shutdown")

    def _tell_app(self, message: Message) -> None:
        # An app that already returned closed its end; the ``None`` it left says so.
        with contextlib.suppress(anyio.BrokenResourceError):
            self._to_app_send.send_nowait(message)

    async def _expect(self, message: Message, phase: str) -> None:
        kind = message.get("type")
        if kind == f"lifespan.{phase}.failed":
            # Starlette's router sends this and then raises the exception: wait for the
            # app to end and raise that, which says more than the message.
            while await self._from_app_receive.receive() is not None:
                pass
            if self.error is not None:
                raise self.error
            raise LifespanError(f"lifespan {phase} failed: {message.get('message', '')}")
        if kind != f"lifespan.{phase}.complete":
            raise LifespanError(
                f"expected 'lifespan.{phase}.complete' or 'lifespan.{phase}.failed', got {kind!r}"
            )


class Detached:
    """A task that is not bound to the task that started it, running in a copy of the
    starting task's context (so the caller's memory budget is current in it).

    ``AsyncClient`` runs the app's lifespan and each request's app in one: a task group
    would have to be entered and left in the same task, but pytest-asyncio runs an async
    fixture's setup and teardown in two tasks, and a streamed response outlives the call
    that returned it.
    """

    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self._cancel_scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps weak references

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
            self._task = loop.create_task(main())  # copies the current context
        else:  # trio: a system task belongs to the run, not to a task
            trio: Any = importlib.import_module("trio")
            trio.lowlevel.spawn_system_task(main, context=contextvars.copy_context())

    async def wait(self) -> None:
        await self._done.wait()

    def cancel(self) -> None:
        self._cancel_scope.cancel()
