"""``nea.Config``: every server option, validated once, frozen.

Owns: option names, defaults and validation. It has no side effects: building a
Config never imports the app, binds a socket or configures logging (the CLI and
``nea.run`` do those). Must not import the server or the HTTP layers.
"""

from __future__ import annotations

import dataclasses
import math
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
ReleaseMode = Literal["never", "idle"]

# 64 KiB of request line + headers: the same order as uvicorn/h11's 16 KiB default
# incremental limit but with room for large cookies; nginx's default is 4 × 8 KiB.
DEFAULT_LIMIT_REQUEST_HEADERS_BYTES = 64 * 1024
# uvicorn's and gunicorn's default listen backlog.
DEFAULT_BACKLOG = 2048
# Per-request memory budget and concurrent budgets: 64 × 32 MiB = a 2 GiB plan, which fits
# a common 2-4 GiB container with room for the baseline.
DEFAULT_BUDGET = "32MiB"
DEFAULT_SLOTS = 64
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
}


@dataclass(frozen=True)
class Config:
    """Validated server options. Invalid values raise ``ConfigError`` naming the option."""

    app: str | ASGIApp
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    backlog: int = DEFAULT_BACKLOG
    workers: int = 1
    loop: LoopSetup = "auto"
    http: HTTPBackend = "auto"
    lifespan: LifespanMode = "auto"
    factory: bool = False
    app_dir: str | None = "."
    root_path: str = ""
    timeout_keep_alive: float = 5.0
    timeout_request_headers: float = 10.0
    timeout_request_body: float = DEFAULT_TIMEOUT_REQUEST_BODY_SECONDS
    timeout_graceful_shutdown: float | None = None
    limit_max_requests: int | None = None
    limit_request_headers: int = DEFAULT_LIMIT_REQUEST_HEADERS_BYTES
    limit_request_body: int | None = None
    buffer_request_body: int | str = DEFAULT_BUFFER_REQUEST_BODY_BYTES
    proxy_headers: bool = True
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    headers: tuple[tuple[str, str], ...] = ()
    server_header: bool = True
    date_header: bool = True
    log_level: LogLevel = "info"
    access_log: bool = True
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    # Memory (see docs/serving.md). ``budget`` and a size ``memory_limit`` are normalised to
    # bytes; ``memory_limit`` is None (off), "auto" or bytes.
    budget: int | str = DEFAULT_BUDGET
    slots: int = DEFAULT_SLOTS
    queue: int | None = None
    queue_timeout: float = 10.0
    meter: MeterMode = "native"
    memory_limit: int | str | None = None
    # The preallocated region (docs/internals/region.md): native meter only.
    region: RegionMode = "on"
    prefault: bool = False
    release_memory: ReleaseMode = "never"

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
        for name in ("limit_max_requests", "limit_request_body", "fd"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, low=0)
        _check_seconds("timeout_keep_alive", self.timeout_keep_alive)
        _check_seconds("timeout_request_headers", self.timeout_request_headers)
        _check_seconds("timeout_request_body", self.timeout_request_body)
        buffer_body = _size("buffer_request_body", self.buffer_request_body, low=0)
        object.__setattr__(self, "buffer_request_body", buffer_body)
        if self.timeout_graceful_shutdown is not None:
            _check_seconds("timeout_graceful_shutdown", self.timeout_graceful_shutdown)
        self._check_memory_options()
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

    def _check_memory_options(self) -> None:
        object.__setattr__(self, "budget", _size("budget", self.budget, low=1))
        _check_int("slots", self.slots, low=1)
        if self.queue is not None:
            _check_int("queue", self.queue, low=0)
        _check_seconds("queue_timeout", self.queue_timeout)
        if not isinstance(self.prefault, bool):
            raise ConfigError(f"--prefault: expected True or False, got {self.prefault!r}")
        limit = self.memory_limit
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
        return 2 * self.slots if self.queue is None else self.queue

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
