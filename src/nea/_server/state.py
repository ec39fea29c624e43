"""State shared by every connection of one ``nea.Server``.

Owns: the settings the per-request path reads (computed once from ``Config``), the set of
live connections and app tasks (what graceful shutdown waits for), and the access log line.
Must not import ``nea.server``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nea._http.backends import parser_factory
from nea._http.parser import ParserLimits
from nea._http.response import DateHeader, default_header_block
from nea._http.scope import TrustedProxies
from nea._types import ASGIApp
from nea.config import Config

if TYPE_CHECKING:
    from nea._server.protocol import HTTPProtocol

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
        on_request: Callable[[], None],
    ) -> None:
        self.config = config
        self.app = app
        self.lifespan_state = lifespan_state
        self.on_request = on_request
        self.make_parser = parser_factory(config.http)
        self.limits = ParserLimits(config.limit_request_headers, config.limit_request_body)
        self.header_prefix = default_header_block(config.server_header, config.headers)
        self.date = DateHeader()
        self.date_header = config.date_header
        self.root_path = config.root_path
        self.scheme = "https" if config.is_ssl else "http"
        self.proxies = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
        self.timeout_keep_alive = config.timeout_keep_alive
        self.timeout_request_headers = config.timeout_request_headers
        self.connections: set[HTTPProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        # Set whenever the last connection and the last app task are gone.
        self.idle = asyncio.Event()
        self.idle.set()

    def date_line(self) -> bytes:
        return self.date.line() if self.date_header else b""

    def access_log_enabled(self) -> bool:
        return self.config.access_log and access_logger.isEnabledFor(logging.INFO)

    def add_connection(self, protocol: HTTPProtocol) -> None:
        self.connections.add(protocol)
        self.idle.clear()

    def discard_connection(self, protocol: HTTPProtocol) -> None:
        self.connections.discard(protocol)
        self._check_idle()

    def add_task(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        self.idle.clear()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.connections and not self.tasks:
            self.idle.set()


def log_access(
    client: tuple[str, int] | None,
    method: str,
    target: bytes,
    http_version: str,
    status: int,
    duration: float,
) -> None:
    """One ``nea.access`` line; ``duration`` (seconds) rides on the record."""
    client_addr = f"{client[0]}:{client[1]}" if client else "-"
    access_logger.info(
        '%s - "%s %s HTTP/%s" %d',
        client_addr,
        method,
        target.decode("latin-1"),
        http_version,
        status,
        extra={"duration": duration},
    )
