"""The ASGI lifespan protocol (``--lifespan auto|on|off``).

Owns: running the app's ``lifespan`` scope in its own task, the shared ``state`` dict that
is copied into every request scope, and the policy for apps that do not speak lifespan
(``auto``: carry on; ``on``: fail). Must not import the server or the HTTP layers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nea._errors import LifespanStartupFailed
from nea._types import ASGIApp, Message

logger = logging.getLogger("nea.error")


class Lifespan:
    """Drives one app's lifespan: ``await startup()`` then, later, ``await shutdown()``."""

    def __init__(self, app: ASGIApp, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._shutdown_failure: str | None = None
        self._unsupported = mode == "off"

    @property
    def supported(self) -> bool:
        """False when lifespan is off or the app turned out not to support it."""
        return not self._unsupported

    async def startup(self) -> None:
        """Run ``lifespan.startup``; raise ``LifespanStartupFailed`` after logging why."""
        if self.mode == "off":
            return
        logger.info("Waiting for application startup.")
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._queue.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            logger.error("Application startup failed: %s", self._failure)
            raise LifespanStartupFailed(f"application startup failed: {self._failure}")
        if not self._unsupported:
            logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        """Run ``lifespan.shutdown`` (a no-op when lifespan is off or unsupported)."""
        if self._unsupported or self._task is None or self._task.done():
            return
        logger.info("Waiting for application shutdown.")
        await self._queue.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._shutdown_failure is not None:
            logger.error("Application shutdown failed: %s", self._shutdown_failure)
        else:
            logger.info("Application shutdown complete.")

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self._record_error(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if not self._startup_done.is_set():
                if self._failure is None and self.mode == "on" and not self._unsupported:
                    self._failure = "the app returned before sending 'lifespan.startup.complete'"
                self._unsupported = self._unsupported or self._failure is None
            self._startup_done.set()
            self._shutdown_done.set()

    def _record_error(self, exc: BaseException) -> None:
        if not self._startup_done.is_set():
            if self.mode == "auto":
                self._unsupported = True
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
                return
            self._failure = f"{type(exc).__name__}: {exc}"
        elif self._failure is None:
            self._shutdown_failure = f"{type(exc).__name__}: {exc}"
        logger.error("Exception in 'lifespan' protocol", exc_info=exc)

    async def _receive(self) -> Message:
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._failure = message.get("message") or "lifespan.startup.failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_failure = message.get("message") or "lifespan.shutdown.failed"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"expected a 'lifespan.*' message, got {kind!r}")
