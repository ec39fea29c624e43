"""``nea.Config``: every server option, validated once, frozen.

Owns: option names, defaults and validation. It is the one source of every default: the CLI,
``nea.run``, the middleware, the pytest plugin and the gunicorn worker read the constants
below or the field defaults of ``Config``. Sizes are parsed here once (``budget`` and
``memory_limit`` are bytes after ``__post_init__``). It has no side effects: building a
Config never imports the app, binds a socket or configures logging (the CLI and
``nea.run`` do those). Must not import the server or the HTTP layers.
"""

from __future__ import annotations

import dataclasses
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nea._errors import ConfigError
from nea._sizes import parse_size
from nea._types import ASGIApp

LoopSetup = Literal["auto", "asyncio", "uvloop"]
HTTPBackend = Literal["auto", "h11", "httptools"]
LifespanMode = Literal["auto", "on", "off"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
MeterMode = Literal["native", "tracemalloc", "off"]
RegionMode = Literal["on", "off"]
WSBackend = Literal["auto", "none", "websockets", "wsproto"]
ReleaseMode = Literal["never", "idle"]
InterfaceMode = Literal["auto", "asgi3"]

# 64 KiB of request line + headers: the same order as uvicorn/h11's 16 KiB default
# incremental limit but with room for large cookies; nginx's default is 4 × 8 KiB.
DEFAULT_LIMIT_REQUEST_HEADERS_BYTES = 64 * 1024
# uvicorn's and gunicorn's default listen backlog.
DEFAULT_BACKLOG = 2048
# Per-request memory budget and concurrent budgets: 64 × 32 MiB = a 2 GiB plan, which fits
# a common 2-4 GiB container with room for the baseline.
DEFAULT_BUDGET_BYTES = 32 * 1024 * 1024
DEFAULT_SLOTS = 64
# The wait queue holds this many requests per slot unless ``queue`` says otherwise.
DEFAULT_QUEUE_PER_SLOT = 2
# A request waits at most this long for a slot, then gets 503 with Retry-After.
DEFAULT_QUEUE_TIMEOUT_SECONDS = 10.0
# uvicorn's WebSocket defaults: the largest message (16 MiB), the received messages queued
# before reading pauses, the keepalive ping's interval and its timeout (websockets' values).
DEFAULT_WS_MAX_SIZE_BYTES = 16 * 1024 * 1024
DEFAULT_WS_MAX_QUEUE = 32
DEFAULT_WS_PING_INTERVAL_SECONDS = 20.0
DEFAULT_WS_PING_TIMEOUT_SECONDS = 20.0
# The WebSocket pool (docs/websockets.md): open connections, each with its own budget for
# its whole life, apart from the request slots: 100 × 8 MiB = 800 MiB on top of the plan.
DEFAULT_WS_SLOTS = 100
DEFAULT_WS_BUDGET_BYTES = 8 * 1024 * 1024
# uvicorn's --reload defaults (watchfiles filter patterns and the restart delay).
DEFAULT_RELOAD_INCLUDES = ("*.py",)
DEFAULT_RELOAD_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")
DEFAULT_RELOAD_DELAY_SECONDS = 0.25


def default_queue(slots: int) -> int:
    """The wait queue's length when ``queue`` is not given: ``2 × slots``."""
    return DEFAULT_QUEUE_PER_SLOT * slots


# Request bodies up to this size are read whole before the request takes a slot, so a client
# that stalls mid-body holds a connection buffer, never a slot. The same as the server's
# per-request body read buffer (asyncio's 64 KiB transport high-water mark).
DEFAULT_BUFFER_REQUEST_BODY_BYTES = 64 * 1024
# Longest pause between two reads of a request body before 408: nginx's
# client_body_timeout default (60 s).
DEFAULT_TIMEOUT_REQUEST_BODY_SECONDS = 60.0

_CHOICES: dict[str, tuple[str, ...]] = {
    "loop": ("auto", "asyncio", "uvloop"),
    "http": ("auto", "h11", "httptools"),
    "lifespan": ("auto", "on", "off"),
    "log_level": ("critical", "error", "warning", "info", "debug", "trace"),
    "meter": ("native", "tracemalloc", "off"),
    "region": ("on", "off"),
    "release_memory": ("never", "idle"),
    "interface": ("auto", "asgi3"),
    "ws": ("auto", "none", "websockets", "wsproto"),
}


@dataclass(frozen=True)
class Config:
    """Validated server options. Invalid values raise ``ConfigError`` naming the option.

    ``budget`` and ``memory_limit`` also accept size strings (``"16MiB"``): they are parsed
    here, once, and are bytes on the frozen object.
    """

    app: str | ASGIApp
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    backlog: int = DEFAULT_BACKLOG
    workers: int = 1
    loop: LoopSetup = "auto"
    http: HTTPBackend = "auto"
    interface: InterfaceMode = "auto"
    lifespan: LifespanMode = "auto"
    factory: bool = False
    app_dir: str | None = "."
    root_path: str = ""
    env_file: str | None = None
    timeout_keep_alive: float = 5.0
    timeout_request_headers: float = 10.0
    timeout_request_body: float = DEFAULT_TIMEOUT_REQUEST_BODY_SECONDS
    timeout_graceful_shutdown: float | None = None
    limit_max_requests: int | None = None
    # Each process adds a random 0..jitter to limit_max_requests, so workers restart apart.
    limit_max_requests_jitter: int = 0
    limit_request_headers: int = DEFAULT_LIMIT_REQUEST_HEADERS_BYTES
    limit_request_body: int | None = None
    # uvicorn's concurrency cap, as nea has it: N slots and no queue (503 beyond N requests).
    limit_concurrency: int | None = None
    buffer_request_body: int = DEFAULT_BUFFER_REQUEST_BODY_BYTES
    proxy_headers: bool = True
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    headers: tuple[tuple[str, str], ...] = ()
    server_header: bool = True
    date_header: bool = True
    log_level: LogLevel = "info"
    access_log: bool = True
    # None: colour when the stream is a terminal (uvicorn's default).
    use_colors: bool | None = None
    log_config: str | None = None
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_version: int = int(ssl.PROTOCOL_TLS_SERVER)
    ssl_cert_reqs: int = int(ssl.CERT_NONE)
    ssl_ca_certs: str | None = None
    ssl_ciphers: str | None = None
    # --reload: a supervisor restarts the server when watched files change (watchfiles).
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_includes: tuple[str, ...] = DEFAULT_RELOAD_INCLUDES
    reload_excludes: tuple[str, ...] = DEFAULT_RELOAD_EXCLUDES
    reload_delay: float = DEFAULT_RELOAD_DELAY_SECONDS
    # "HOST:PORT" of the Prometheus /metrics listener, or None.
    metrics: str | None = None
    # Memory (see docs/serving.md): ``budget`` in bytes, ``memory_limit`` None (off),
    # "auto" or bytes.
    budget: int = DEFAULT_BUDGET_BYTES
    slots: int = DEFAULT_SLOTS
    queue: int | None = None
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT_SECONDS
    meter: MeterMode = "native"
    memory_limit: int | Literal["auto"] | None = None
    # The preallocated region (docs/internals/region.md): native meter only.
    region: RegionMode = "on"
    prefault: bool = False
    release_memory: ReleaseMode = "never"
    # WebSockets (docs/websockets.md): uvicorn's options, then nea's pool of connections.
    ws: WSBackend = "auto"
    ws_max_size: int = DEFAULT_WS_MAX_SIZE_BYTES
    ws_max_queue: int = DEFAULT_WS_MAX_QUEUE
    ws_ping_interval: float | None = DEFAULT_WS_PING_INTERVAL_SECONDS
    ws_ping_timeout: float | None = DEFAULT_WS_PING_TIMEOUT_SECONDS
    ws_per_message_deflate: bool = True
    ws_slots: int = DEFAULT_WS_SLOTS
    ws_budget: int = DEFAULT_WS_BUDGET_BYTES

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(
                    f"--{name.replace('_', '-')}: expected one of {', '.join(choices)}, "
                    f"got {value!r}"
                )
        if isinstance(self.app, str) and ":" not in self.app:
            raise ConfigError(
                f"APP: expected 'module:attribute' (e.g. 'main:app'), got {self.app!r}"
            )
        _check_int("port", self.port, low=0, high=65535)
        _check_int("backlog", self.backlog, low=1)
        _check_int("workers", self.workers, low=1)
        _check_int("limit_request_headers", self.limit_request_headers, low=1)
        _check_int("limit_max_requests_jitter", self.limit_max_requests_jitter, low=0)
        for name in ("limit_max_requests", "limit_request_body", "fd", "limit_concurrency"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, low=1 if name == "limit_concurrency" else 0)
        _check_seconds("timeout_keep_alive", self.timeout_keep_alive)
        _check_seconds("timeout_request_headers", self.timeout_request_headers)
        _check_seconds("reload_delay", self.reload_delay)
        _check_seconds("timeout_request_body", self.timeout_request_body)
        buffer_body = _size("buffer_request_body", self.buffer_request_body, low=0)
        object.__setattr__(self, "buffer_request_body", buffer_body)
        if self.timeout_graceful_shutdown is not None:
            _check_seconds("timeout_graceful_shutdown", self.timeout_graceful_shutdown)
        self._check_memory_options()
        self._check_websocket_options()
        self._check_process_options()
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ConfigError("--ssl-keyfile and --ssl-certfile must be given together")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(
                f"--root-path: expected a path starting with '/' and not ending with '/', "
                f"got {self.root_path!r}"
            )
        for header in self.headers:
            if len(header) != 2 or not header[0] or any(c in header[0] for c in ": \r\n"):
                raise ConfigError(f"--header: expected 'name:value', got {header!r}")

    def _check_websocket_options(self) -> None:
        object.__setattr__(self, "ws_max_size", _size("ws_max_size", self.ws_max_size, low=1))
        object.__setattr__(self, "ws_budget", _size("ws_budget", self.ws_budget, low=1))
        _check_int("ws_max_queue", self.ws_max_queue, low=1)
        _check_int("ws_slots", self.ws_slots, low=1)
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            value = getattr(self, name)
            if value is not None:
                _check_seconds(name, value)
        if not isinstance(self.ws_per_message_deflate, bool):
            raise ConfigError(
                "--ws-per-message-deflate: expected True or False, "
                f"got {self.ws_per_message_deflate!r}"
            )

    def _check_process_options(self) -> None:
        if self.reload and self.workers > 1:
            raise ConfigError(
                "--reload and --workers: give one; --reload runs a single server process "
                "that is restarted when files change"
            )
        if self.reload and not isinstance(self.app, str):
            raise ConfigError(
                "--reload: needs the app as an import string ('module:attribute') so the "
                "restarted process can import it again"
            )
        if self.metrics is not None:
            parse_host_port("metrics", self.metrics)

    def _check_memory_options(self) -> None:
        object.__setattr__(self, "budget", _size("budget", self.budget, low=1))
        _check_int("slots", self.slots, low=1)
        if self.queue is not None:
            _check_int("queue", self.queue, low=0)
        if self.limit_concurrency is not None:
            if self.slots not in (DEFAULT_SLOTS, self.limit_concurrency) or self.queue not in (
                None,
                0,
            ):
                raise ConfigError(
                    "--limit-concurrency: give it or --slots/--queue, not both; "
                    "--limit-concurrency N means --slots N --queue 0"
                )
            object.__setattr__(self, "slots", self.limit_concurrency)
            object.__setattr__(self, "queue", 0)
        _check_seconds("queue_timeout", self.queue_timeout)
        if not isinstance(self.prefault, bool):
            raise ConfigError(f"--prefault: expected True or False, got {self.prefault!r}")
        limit: object = self.memory_limit
        if isinstance(limit, str) and limit.strip().lower() in ("off", "auto"):
            limit = limit.strip().lower()
        if limit == "off":
            limit = None
        elif limit is not None and limit != "auto":
            limit = _size("memory_limit", limit, low=1, extra="'auto', 'off' or ")
        if limit == "auto" and self.meter == "off":
            raise ConfigError(
                "--memory-limit auto: the memory plan needs budgets, but --meter is off; "
                "give a size (e.g. --memory-limit 2GiB) or turn the meter on"
            )
        object.__setattr__(self, "memory_limit", limit)

    @property
    def queue_size(self) -> int:
        """How many requests may wait for a slot (``queue``, default ``2 × slots``)."""
        return default_queue(self.slots) if self.queue is None else self.queue

    @property
    def is_ssl(self) -> bool:
        return self.ssl_certfile is not None

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied and validated again."""
        return dataclasses.replace(self, **changes)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_option(name)}: expected a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{_option(name)}: expected a whole number {bounds}, got {value}")


def _size(name: str, value: object, *, low: int, extra: str = "") -> int:
    if not isinstance(value, int | str):
        raise ConfigError(f"{_option(name)}: expected {extra}a size such as '32MiB', got {value!r}")
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{_option(name)}: expected {extra}a size; {exc}") from None
    if size < low:
        raise ConfigError(
            f"{_option(name)}: expected a size of at least {low} byte(s), got {value!r}"
        )
    return size


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{_option(name)}: expected seconds as a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"{_option(name)}: expected a non-negative number of seconds, got {value}"
        )


def parse_header_option(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Turn ``--header name:value`` strings into pairs; raise ``ConfigError`` otherwise."""
    pairs = []
    for raw in values:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header: expected 'name:value', got {raw!r}")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def parse_host_port(name: str, text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[::1]:9000`` for IPv6) as a pair; ``ConfigError`` naming ``name``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{_option(name)}: expected HOST:PORT (e.g. 127.0.0.1:9100), got {text!r}"
        )
    return host, int(port)
