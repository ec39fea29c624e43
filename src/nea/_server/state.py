"""State shared by every connection of one ``nea.Server``.

Owns: the settings the per-request path reads (computed once from ``Config``), the set of
live connections and app tasks (what graceful shutdown waits for), and the access log line.
Must not import ``nea.server``.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from nea._admission import Admission
from nea._http.backends import parser_factory, websocket_backend
from nea._http.parser import ParserLimits
from nea._http.response import DateHeader, default_header_block
from nea._http.scope import TrustedProxies
from nea._http.ws_engines import engine_factory
from nea._server.budgets import build_admission, build_ws_admission, release_idle_memory
from nea._sizes import format_size
from nea._types import ASGIApp
from nea.config import Config

if TYPE_CHECKING:
    from nea._server.cycle import RequestCycle
    from nea._server.protocol import HTTPProtocol
    from nea._server.websocket import WebSocketProtocol

    # What the server holds of each open connection (shutdown, abort), whichever protocol
    # it speaks now.
    Connection: TypeAlias = HTTPProtocol | WebSocketProtocol

logger = logging.getLogger("nea.error")
access_logger = logging.getLogger("nea.access")

# Request-body bytes buffered per request before nea stops reading from the socket; the same
# order as asyncio's default transport write high-water mark (64 KiB).
BODY_HIGH_WATER_BYTES = 64 * 1024


class ServerState:
    """Everything connections share; one per ``Server.serve()`` call."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        lifespan_state: dict[str, Any] | None,
        on_request: Callable[[], None] | None,
        *,
        admission: Admission | None = None,
    ) -> None:
        self.config = config
        self.app = app
        # Every request runs through admission: a slot, then the app inside its budget.
        self.admission = admission if admission is not None else build_admission(config)
        self.lifespan_state = lifespan_state
        self.on_request = on_request
        self.make_parser = parser_factory(config.http)
        # WebSocket handshakes switch protocols (--ws); ``none`` serves them as HTTP.
        ws_backend = websocket_backend(config.ws)
        self.ws_enabled = ws_backend is not None
        self.make_ws_engine = engine_factory(ws_backend or "wsproto")
        self.ws_deflate = config.ws_per_message_deflate
        self.ws_admission = build_ws_admission(config)
        self.limits = ParserLimits(
            config.limit_request_headers,
            config.limit_request_body,
            stop_at_websocket=self.ws_enabled,
        )
        self.header_prefix = default_header_block(config.server_header, config.headers)
        self.date = DateHeader() if config.date_header else None
        # server + date + --header lines, refreshed once per second by tick_clock().
        self.default_headers = self.header_prefix
        self._clock: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        # The server's own context (no request budget in it): the server's work for a
        # request's ``send`` runs here, so it is never charged to the request (see
        # RequestCycle.send).
        self.context = contextvars.copy_context()
        # Cycles whose head may still be unwritten at the end of this loop iteration; one
        # call_soon serves every response started in the same iteration. A cycle whose head
        # left with its first body message puts None in its place at once (RequestCycle.
        # _send), so that it, and what the app left in it, is not kept alive until the next
        # iteration: under load a whole burst of finished requests would stay alive
        # together, and blocks of theirs pin region pages (docs/internals/region.md).
        self.pending_heads: list[RequestCycle | None] = []
        self._flush_scheduled = False
        # Decided once per serve(): the CLI configures logging before the server starts.
        self.access_log = config.access_log and access_logger.isEnabledFor(logging.INFO)
        self.root_path = config.root_path
        self.scheme = "https" if config.is_ssl else "http"
        self.proxies = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
        self.timeout_keep_alive = config.timeout_keep_alive
        self.timeout_request_headers = config.timeout_request_headers
        self.timeout_request_body = config.timeout_request_body
        self.buffer_request_body = int(config.buffer_request_body)
        # A body being buffered before its request takes a slot must never pause reading
        # (nothing would resume it), so the read buffer is at least that large.
        self.body_high_water = max(BODY_HIGH_WATER_BYTES, self.buffer_request_body)
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        # Set, once shutting down, when the last connection and the last app task are gone.
        self.idle = asyncio.Event()

    def tick_clock(self) -> None:
        """Refresh ``default_headers``' date now and schedule the next refresh (each second).
        The same tick gives idle region pages back with ``--release-memory idle``."""
        release = self.config.release_memory == "idle"
        if self.date is None and not release:
            return
        if self.date is not None:
            self.default_headers = self.header_prefix + self.date.line()
        if release:
            release_idle_memory(self.config, self.admission.statistics().busy)
        now = time.time()
        self._clock = self._loop.call_later(1.0 - (now - int(now)) + 0.001, self.tick_clock)

    def flush_head_soon(self, cycle: RequestCycle) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_heads, context=self.context)
        self.pending_heads.append(cycle)

    def _flush_heads(self) -> None:
        self._flush_scheduled = False
        pending = self.pending_heads
        self.pending_heads = []
        for cycle in pending:
            # usually the first body message carried it already (None: see pending_heads)
            if cycle is not None and not cycle.head_written:
                cycle.flush_head()

    def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def discard_connection(self, protocol: Connection) -> None:
        self.connections.discard(protocol)
        if self.shutting_down:
            self.check_idle()

    def task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.shutting_down:
            self.check_idle()

    def check_idle(self) -> None:
        if not self.connections and not self.tasks:
            self.idle.set()


def _status_text(status: int) -> str:
    """``200 OK``, as uvicorn's access lines say it (just the number when it has no name)."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def log_access(
    client: tuple[str, int] | None,
    method: str,
    target: bytes,
    http_version: str,
    status: int,
    duration: float,
    peak: int | None = None,
    aborted: bool = False,
) -> None:
    """One ``nea.access`` line shaped like uvicorn's (status and reason phrase), then the
    duration and, for a budgeted request, the peak memory of its budget so far:
    ``... 200 OK 3.1ms peak 1.2 MiB``, then ``aborted`` for a response cut off after it
    started (a trip). Both numbers also ride on the record (``duration`` in seconds,
    ``peak`` in bytes or None)."""
    client_addr = f"{client[0]}:{client[1]}" if client else "-"
    access_logger.info(
        '%s - "%s %s HTTP/%s" %s %.1fms%s%s',
        client_addr,
        method,
        target.decode("latin-1"),
        http_version,
        _status_text(status),
        duration * 1000,
        "" if peak is None else f" peak {format_size(peak)}",
        " aborted" if aborted else "",
        extra={"duration": duration, "peak": peak},
    )
