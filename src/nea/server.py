"""``nea.Server``: one process serving one ASGI app until told to stop.

Owns: the serve lifecycle — import the app, lifespan startup, bind/listen, the started
signal, graceful shutdown (stop accepting, drain in-flight requests up to
``timeout_graceful_shutdown``, cancel the rest, lifespan shutdown) and ``limit_max_requests``.
It never installs signal handlers, configures logging or calls ``sys.exit``: the CLI does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from nea._admission import AdmissionStatistics
from nea._errors import NeaError
from nea._executor import ContextThreadPoolExecutor
from nea._importer import import_app
from nea._lifespan import Lifespan
from nea._memory import MemoryPlan
from nea._server.budgets import (
    build_admission,
    restore_meter,
    select_meter,
    start_memory_plan,
    start_region,
    stop_region,
)
from nea._server.protocol import HTTPProtocol
from nea._server.state import ServerState
from nea._sockets import bind_socket, create_ssl_context, describe_address
from nea.config import Config
from nea.meter._door import wake_loop_for_deliveries

logger = logging.getLogger("nea.error")


class Server:
    """Serve ``config.app`` on an asyncio loop.

    Typical use::

        server = nea.Server(nea.Config(app, port=0))
        task = asyncio.create_task(server.serve())
        await server.wait_started()
        ...                       # server.addresses holds the bound socket names
        server.shutdown()
        await task
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.addresses: list[Any] = []
        self.total_requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._should_stop = asyncio.Event()
        self._force = asyncio.Event()
        self._start_settled = asyncio.Event()
        self._start_error: BaseException | None = None
        self._started = False
        self._stop_requested = False
        self._admission = build_admission(config)
        self.memory_plan: MemoryPlan | None = None

    @property
    def started(self) -> bool:
        return self._started

    def statistics(self) -> AdmissionStatistics:
        """Slots busy, requests waiting, and the served/tripped/rejected/abandoned counters."""
        return self._admission.statistics()

    async def wait_started(self) -> None:
        """Return once the server accepts connections.

        Raises ``NeaError`` (chained to the cause) when ``serve()`` failed before that.
        """
        await self._start_settled.wait()
        if not self._started:
            raise NeaError("nea.Server stopped before it started") from self._start_error

    def shutdown(self) -> None:
        """Ask for a graceful stop; call it from the loop's thread (``loop.add_signal_handler``)."""
        self._stop_requested = True
        self._should_stop.set()

    def shutdown_threadsafe(self) -> None:
        """``shutdown()`` from any thread or a plain ``signal.signal`` handler."""
        self._stop_requested = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._should_stop.set)

    def force_exit(self) -> None:
        """Stop now: cancel in-flight requests instead of waiting (a second Ctrl-C)."""
        self._stop_requested = True
        self._should_stop.set()
        self._force.set()

    async def serve(
        self, sockets: list[socket.socket] | None = None, *, close_sockets: bool = False
    ) -> None:
        """Serve until ``shutdown()``; see the class docstring.

        With ``sockets=None`` it binds with ``bind_socket(config)`` and closes that socket on
        return. Given ``sockets`` (already listening) are served on duplicates and left open:
        the caller owns them. With ``close_sockets=True`` the server takes them over
        instead, serves them directly and closes them as it stops listening (also when it
        fails to start), so that a shutdown refuses new connections at once; a socket the
        caller kept open would go on accepting them into its backlog.

        Raises ``AppImportError``, ``LifespanStartupFailed``, ``BindError`` or
        ``ConfigError`` (e.g. ``--meter native`` not built, a ``--memory-limit`` that
        cannot be applied) when it cannot start.
        """
        loop = self._loop = asyncio.get_running_loop()
        config = self.config
        lifespan: Lifespan | None = None
        lifespan_started = False
        state: ServerState | None = None
        owned: list[socket.socket] = []
        previous_meter = None
        previous_region = None
        servers: list[asyncio.Server] = []
        stop_waking: Callable[[], None] = _nothing
        try:
            previous_meter = select_meter(config)
            previous_region = start_region(config)
            # run_in_executor(None, fn) runs fn in the calling request's context (and
            # budget), as to_thread does; set before the lifespan, so an app's own wins.
            loop.set_default_executor(ContextThreadPoolExecutor())
            app = import_app(config)
            logger.info("Started server process [%d]", os.getpid())
            lifespan = Lifespan(app, config.lifespan)
            await lifespan.startup()
            lifespan_started = True
            self.memory_plan = start_memory_plan(config)
            ssl_context = create_ssl_context(config)
            if sockets is None:
                owned = [bind_socket(config)]
                listen = owned
            else:
                listen = list(sockets) if close_sockets else [sock.dup() for sock in sockets]
                owned = listen
            on_request = self._count_request if config.limit_max_requests is not None else None
            state = ServerState(config, app, lifespan.state, on_request, admission=self._admission)
            state.tick_clock()
            if config.meter == "native":
                stop_waking = wake_loop_for_deliveries(loop)
            for sock in listen:
                servers.append(
                    await loop.create_server(
                        lambda: HTTPProtocol(state, loop),
                        sock=sock,
                        ssl=ssl_context,
                        backlog=config.backlog,
                    )
                )
        except BaseException as exc:
            for server in servers:
                server.close()
            if state is not None:
                state.stop_clock()
            stop_waking()
            self._start_error = exc
            self._start_settled.set()
            for sock in owned:
                sock.close()
            if lifespan is not None and lifespan_started:
                await lifespan.shutdown()
            stop_region(previous_region)
            restore_meter(previous_meter)
            raise
        self._announce(listen)
        try:
            if not self._stop_requested:
                await self._should_stop.wait()
        finally:
            try:
                await self._stop(servers, state, lifespan)
            finally:
                stop_waking()
                stop_region(previous_region)
                restore_meter(previous_meter)

    def _announce(self, listen: list[socket.socket]) -> None:
        scheme = "https" if self.config.is_ssl else "http"
        self.addresses = [sock.getsockname() for sock in listen]
        for sock in listen:
            where = describe_address(sock)
            if sock.family != socket.AF_UNIX:
                where = f"{scheme}://{where}"
            logger.info("nea running on %s", where)
        self._started = True
        self._start_settled.set()

    def _count_request(self) -> None:
        self.total_requests += 1
        limit = self.config.limit_max_requests or 0
        if self.total_requests >= limit and not self._stop_requested:
            logger.warning("Maximum request limit of %d reached: shutting down.", limit)
            self.shutdown()

    async def _stop(
        self, servers: list[asyncio.Server], state: ServerState, lifespan: Lifespan
    ) -> None:
        # Stop listening first: from here on, new connections are refused.
        for server in servers:
            server.close()
        logger.info("Shutting down")
        state.stop_clock()
        state.shutting_down = True
        for conn in list(state.connections):
            conn.shutdown()
        state.check_idle()
        if not state.idle.is_set():
            await self._drain(state)
        for server in servers:
            await server.wait_closed()
        await lifespan.shutdown()

    async def _drain(self, state: ServerState) -> None:
        """Wait for in-flight requests; cancel them after the timeout or on ``force_exit``."""
        idle = asyncio.ensure_future(state.idle.wait())
        force = asyncio.ensure_future(self._force.wait())
        try:
            done, _ = await asyncio.wait(
                {idle, force},
                timeout=self.config.timeout_graceful_shutdown,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            idle.cancel()
            force.cancel()
        if idle in done:
            return
        logger.warning(
            "Cancelling %d in-flight request(s) and closing %d connection(s)",
            len(state.tasks),
            len(state.connections),
        )
        for conn in list(state.connections):
            conn.abort()
        tasks = list(state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _nothing() -> None:
    pass
