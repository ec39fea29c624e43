"""The table of ``nea``'s options and how their text becomes ``Config`` values.

Owns: every option (every option of uvicorn's ``--help`` is here: accepted with the same
meaning, or in ``UNSUPPORTED`` with one line saying why), its ``NEA_<OPTION>`` environment
variable, and the conversion of option text to ``Config`` keyword arguments: the command line
first, then the variable; an option given nowhere is left out, so ``Config``'s field default
applies (the one source of defaults). Raises ``ConfigError`` naming the option (and the
variable) and the accepted form. Used by the CLI and the gunicorn worker; must not import
the server, argparse's parser (``nea.cli`` builds it) or call ``sys.exit``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nea._errors import ConfigError
from nea._sizes import format_size, parse_size
from nea.config import (
    DEFAULT_RELOAD_EXCLUDES,
    DEFAULT_RELOAD_INCLUDES,
    Config,
    parse_header_option,
)

ENV_PREFIX = "NEA_"

Kind = Literal["value", "flag", "switch", "append"]


def _text(text: str) -> str:
    return text


def _whole(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ValueError(f"expected a size; {exc}") from None


def _seconds_or_off(text: str) -> float:
    """Seconds, where ``none``/``off`` mean 0 (no keepalive pings, no pong timeout)."""
    if text.strip().lower() in ("none", "off"):
        return 0.0
    return _seconds(text)


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false (1/0, yes/no, on/off), got {text!r}")


@dataclass(frozen=True)
class Option:
    """One command-line option: ``--flag`` text → ``field`` of ``Config`` (or of the CLI).

    ``kind``: ``value`` takes one argument, ``flag`` is a bare on-switch, ``switch`` has a
    ``--no-`` form, ``append`` may be repeated. ``uvicorn`` names the uvicorn option it
    stands for (docs/cli.md is checked against this table).
    """

    flag: str
    field: str
    help: str
    kind: Kind = "value"
    convert: Callable[[str], Any] = _text
    metavar: str | None = None
    uvicorn: str | None = None

    @property
    def env(self) -> str:
        """``NEA_PORT`` for ``--port``: the environment variable that sets this option."""
        return ENV_PREFIX + self.flag.lstrip("-").upper().replace("-", "_")


@dataclass(frozen=True)
class Unsupported:
    """A uvicorn option that nea does not have: rejected with ``reason``."""

    flag: str
    reason: str
    takes_value: bool = True


def _default(field: str) -> Any:
    for item in dataclasses.fields(Config):
        if item.name == field:
            return item.default
    raise KeyError(field)


def _shown(field: str) -> str:
    value = _default(field)
    if field in (
        "budget",
        "limit_request_headers",
        "buffer_request_body",
        "ws_max_size",
        "ws_budget",
    ):
        return format_size(value).replace(" ", "").replace(".0", "")
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(value) or "none"
    return "none" if value is None else str(value)


def _h(text: str, field: str | None = None) -> str:
    """Help text ending in ``Config``'s default for ``field`` (never written twice)."""
    return f"{text} ({_shown(field)})" if field else text


OPTIONS: tuple[tuple[str, tuple[Option, ...]], ...] = (
    (
        "application",
        (
            Option("--app-dir", "app_dir", _h("directory put first on sys.path", "app_dir")),
            Option("--factory", "factory", "APP is a callable returning the application", "flag"),
            Option(
                "--interface",
                "interface",
                "application interface; nea serves ASGI 3 only (auto)",
                metavar="{auto,asgi3}",
            ),
            Option(
                "--lifespan",
                "lifespan",
                _h("lifespan protocol", "lifespan"),
                metavar="{auto,on,off}",
            ),
            Option("--root-path", "root_path", "ASGI root_path, for apps mounted below a prefix"),
            Option(
                "--env-file",
                "env_file",
                "load environment variables from this file (python-dotenv) before the app",
                metavar="PATH",
            ),
            Option(
                "--workers",
                "workers",
                "number of worker processes ($WEB_CONCURRENCY, else 1)",
                convert=_whole,
                metavar="N",
            ),
            Option("--loop", "loop", _h("event loop", "loop"), metavar="{auto,asyncio,uvloop}"),
            Option("--http", "http", _h("HTTP parser", "http"), metavar="{auto,h11,httptools}"),
        ),
    ),
    (
        "development",
        (
            Option("--reload", "reload", "restart the server when files change", "flag"),
            Option(
                "--reload-dir",
                "reload_dirs",
                "watch this directory (repeatable; default: the current directory)",
                "append",
                metavar="PATH",
            ),
            Option(
                "--reload-include",
                "reload_includes",
                f"also watch files matching this glob ({', '.join(DEFAULT_RELOAD_INCLUDES)})",
                "append",
                metavar="GLOB",
            ),
            Option(
                "--reload-exclude",
                "reload_excludes",
                f"ignore files matching this glob ({', '.join(DEFAULT_RELOAD_EXCLUDES)})",
                "append",
                metavar="GLOB",
            ),
            Option(
                "--reload-delay",
                "reload_delay",
                _h("seconds to gather changes before a restart", "reload_delay"),
                convert=_seconds,
                metavar="S",
            ),
        ),
    ),
    (
        "where to listen",
        (
            Option("--host", "host", _h("bind to this address", "host")),
            Option(
                "--port",
                "port",
                _h("bind to this TCP port; 0 picks a free one", "port"),
                convert=_whole,
            ),
            Option("--uds", "uds", "bind to this Unix domain socket", metavar="PATH"),
            Option(
                "--fd", "fd", "serve this inherited listening socket", convert=_whole, metavar="N"
            ),
            Option(
                "--backlog", "backlog", _h("listen backlog", "backlog"), convert=_whole, metavar="N"
            ),
            Option("--ssl-keyfile", "ssl_keyfile", "TLS private key (PEM)", metavar="FILE"),
            Option("--ssl-certfile", "ssl_certfile", "TLS certificate chain (PEM)", metavar="FILE"),
            Option(
                "--ssl-keyfile-password", "ssl_keyfile_password", "password of the TLS private key"
            ),
            Option(
                "--ssl-version",
                "ssl_version",
                _h("ssl module protocol constant", "ssl_version"),
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--ssl-cert-reqs",
                "ssl_cert_reqs",
                _h("client certificates: 0 none, 1 optional, 2 required", "ssl_cert_reqs"),
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--ssl-ca-certs",
                "ssl_ca_certs",
                "CA certificates to verify clients",
                metavar="FILE",
            ),
            Option("--ssl-ciphers", "ssl_ciphers", "OpenSSL cipher list (OpenSSL's defaults)"),
        ),
    ),
    (
        "memory: budgets, slots, queue",
        (
            Option(
                "--budget",
                "budget",
                _h("memory budget per request", "budget"),
                convert=_size,
                metavar="SIZE",
            ),
            Option(
                "--slots", "slots", _h("requests run at once", "slots"), convert=_whole, metavar="N"
            ),
            Option(
                "--queue",
                "queue",
                "requests that may wait for a slot (2 × slots)",
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--queue-timeout",
                "queue_timeout",
                _h("longest wait for a slot, then 503", "queue_timeout"),
                convert=_seconds,
                metavar="S",
            ),
            Option(
                "--limit-concurrency",
                "limit_concurrency",
                "uvicorn's cap: N requests at once, 503 beyond (= --slots N --queue 0)",
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--meter",
                "meter",
                _h("how budgets are metered; off = slots only", "meter"),
                metavar="{native,tracemalloc,off}",
            ),
            Option(
                "--memory-limit",
                "memory_limit",
                "hard cap on the process's memory; auto = the memory plan plus headroom (off)",
                metavar="SIZE|auto|off",
            ),
            Option(
                "--region",
                "region",
                _h("serve budgets from one region mapped at startup", "region"),
                metavar="{on,off}",
            ),
            Option(
                "--prefault",
                "prefault",
                "touch every page of the region at startup: RSS is final from the first request",
                "flag",
            ),
            Option(
                "--release-memory",
                "release_memory",
                _h("give reset region pages back to the OS when idle", "release_memory"),
                metavar="{never,idle}",
            ),
        ),
    ),
    (
        "timeouts and limits",
        (
            Option(
                "--timeout-keep-alive",
                "timeout_keep_alive",
                _h("idle keep-alive timeout", "timeout_keep_alive"),
                convert=_seconds,
                metavar="S",
            ),
            Option(
                "--timeout-request-headers",
                "timeout_request_headers",
                _h("time to send the whole header section, else 408", "timeout_request_headers"),
                convert=_seconds,
                metavar="S",
            ),
            Option(
                "--timeout-request-body",
                "timeout_request_body",
                _h("longest pause while a request body arrives, else 408", "timeout_request_body"),
                convert=_seconds,
                metavar="S",
            ),
            Option(
                "--buffer-request-body",
                "buffer_request_body",
                _h(
                    "read request bodies up to SIZE before the request takes a slot; 0: never",
                    "buffer_request_body",
                ),
                convert=_size,
                metavar="SIZE",
            ),
            Option(
                "--timeout-graceful-shutdown",
                "timeout_graceful_shutdown",
                "on shutdown, wait this long for in-flight requests (no limit)",
                convert=_seconds,
                metavar="S",
            ),
            Option(
                "--limit-max-requests",
                "limit_max_requests",
                "a process stops after N requests (a worker is replaced)",
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--limit-max-requests-jitter",
                "limit_max_requests_jitter",
                _h("add a random 0..N to --limit-max-requests", "limit_max_requests_jitter"),
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--limit-request-headers",
                "limit_request_headers",
                _h("largest request line + header section, else 431", "limit_request_headers"),
                convert=parse_size,
                metavar="SIZE",
            ),
            Option(
                "--h11-max-incomplete-event-size",
                "h11_max_incomplete_event_size",
                "uvicorn's name for --limit-request-headers, in bytes (both parsers)",
                convert=_whole,
                metavar="BYTES",
            ),
            Option(
                "--limit-request-body",
                "limit_request_body",
                "largest request body, else 413 (no limit)",
                convert=parse_size,
                metavar="SIZE",
            ),
        ),
    ),
    (
        "headers and proxies",
        (
            Option(
                "--header",
                "headers",
                "add this header to every response (repeatable)",
                "append",
                metavar="NAME:VALUE",
            ),
            Option(
                "--server-header",
                "server_header",
                _h("send 'server: nea'", "server_header"),
                "switch",
            ),
            Option("--date-header", "date_header", _h("send 'date'", "date_header"), "switch"),
            Option(
                "--proxy-headers",
                "proxy_headers",
                _h("trust X-Forwarded-For/-Proto from --forwarded-allow-ips", "proxy_headers"),
                "switch",
            ),
            Option(
                "--forwarded-allow-ips",
                "forwarded_allow_ips",
                "comma-separated proxy addresses to trust, or '*' "
                "($FORWARDED_ALLOW_IPS, else 127.0.0.1)",
                metavar="IPS",
            ),
        ),
    ),
    (
        "websockets",
        (
            Option(
                "--ws",
                "ws",
                _h("WebSocket backend; none serves upgrades as plain HTTP", "ws"),
                metavar="{auto,none,websockets,wsproto}",
            ),
            Option(
                "--ws-max-size",
                "ws_max_size",
                _h("largest WebSocket message; a larger one closes with 1009", "ws_max_size"),
                convert=_size,
                metavar="SIZE",
            ),
            Option(
                "--ws-max-queue",
                "ws_max_queue",
                _h("received messages queued before reading pauses", "ws_max_queue"),
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--ws-ping-interval",
                "ws_ping_interval",
                _h("seconds between keepalive pings, or 0 for none", "ws_ping_interval"),
                convert=_seconds_or_off,
                metavar="SECONDS",
            ),
            Option(
                "--ws-ping-timeout",
                "ws_ping_timeout",
                _h("seconds to wait for a pong before closing, or 0 for none", "ws_ping_timeout"),
                convert=_seconds_or_off,
                metavar="SECONDS",
            ),
            Option(
                "--ws-per-message-deflate",
                "ws_per_message_deflate",
                _h("offer the permessage-deflate extension", "ws_per_message_deflate"),
                "switch",
            ),
            Option(
                "--ws-slots",
                "ws_slots",
                _h("WebSocket connections open at once, each with its own budget", "ws_slots"),
                convert=_whole,
                metavar="N",
            ),
            Option(
                "--ws-budget",
                "ws_budget",
                _h("memory budget per WebSocket connection, for its whole life", "ws_budget"),
                convert=_size,
                metavar="SIZE",
            ),
        ),
    ),
    (
        "logging and metrics",
        (
            Option(
                "--log-level",
                "log_level",
                _h("log level", "log_level"),
                metavar="{critical,error,warning,info,debug,trace}",
            ),
            Option(
                "--log-config",
                "log_config",
                "logging configuration file: .json, .yaml/.yml or .ini (fileConfig)",
                metavar="PATH",
            ),
            Option(
                "--access-log",
                "access_log",
                _h("log one line per response on 'nea.access'", "access_log"),
                "switch",
            ),
            Option(
                "--use-colors",
                "use_colors",
                "colour the level names (on when the output is a terminal)",
                "switch",
            ),
            Option(
                "--metrics",
                "metrics",
                "serve Prometheus /metrics on this separate listener (off)",
                metavar="HOST:PORT",
            ),
        ),
    ),
)

UNSUPPORTED: tuple[Unsupported, ...] = (
    Unsupported(
        "--http2", "nea speaks HTTP/1.1; terminate HTTP/2 at a proxy in front of it", False
    ),
    Unsupported(
        "--timeout-worker-healthcheck",
        "nea's supervisor learns of a dead worker from its process and pipe, without pings",
    ),
    Unsupported(
        "--reset-contextvars",
        "not implemented: nea has no option to start requests from a fresh context",
        False,
    ),
)


def all_options() -> list[Option]:
    return [option for _, group in OPTIONS for option in group]


def environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``Config`` options that ``NEA_*`` variables set (for the gunicorn worker)."""
    given_nowhere = argparse.Namespace(**{option.field: None for option in all_options()})
    return option_values(given_nowhere, environ)


def option_values(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """``Config`` keyword arguments for every option given on the command line or in the
    environment; options given nowhere are left out, so ``Config``'s defaults apply."""
    values: dict[str, Any] = {}
    for option in all_options():
        value = _value_of(option, getattr(args, option.field), environ)
        if value is not None:
            values[option.field] = value
    if "workers" not in values and environ.get("WEB_CONCURRENCY"):
        values["workers"] = _convert(
            "--workers (from WEB_CONCURRENCY)", environ["WEB_CONCURRENCY"], _whole
        )
    allow_ips = values.pop("forwarded_allow_ips", None) or environ.get("FORWARDED_ALLOW_IPS")
    if allow_ips is not None:
        values["forwarded_allow_ips"] = tuple(
            ip.strip() for ip in allow_ips.split(",") if ip.strip()
        )
    if "headers" in values:
        values["headers"] = parse_header_option(values["headers"])
    if "h11_max_incomplete_event_size" in values:
        if "limit_request_headers" in values:
            raise ConfigError(
                "--h11-max-incomplete-event-size and --limit-request-headers: give one "
                "(they are the same limit)"
            )
        values["limit_request_headers"] = values.pop("h11_max_incomplete_event_size")
    _resolve_reload_patterns(values)
    if values.get("meter") == "auto":  # NEA_METER=auto, as the library reads it
        del values["meter"]
    return values


def _value_of(option: Option, raw: Any, environ: Mapping[str, str]) -> Any:
    """The option's converted value from the command line, else from ``NEA_<OPTION>``."""
    source = option.flag
    if raw is None:
        text = environ.get(option.env)
        if text is None:
            return None
        source = f"{option.flag} (from {option.env})"
        if option.kind in ("flag", "switch"):
            return _convert(source, text, _boolean)
        if option.kind == "append":
            # As click reads uvicorn's multiple-value variables: split on whitespace; a header
            # value may hold spaces, so NEA_HEADER is split on newlines instead.
            raw = text.splitlines() if option.field == "headers" else text.split()
        else:
            raw = text
    if option.kind == "flag":
        return True
    if option.kind == "switch":
        return bool(raw)
    if option.kind == "append":
        return [_convert(source, item, option.convert) for item in raw]
    return _convert(source, raw, option.convert)


def _resolve_reload_patterns(values: dict[str, Any]) -> None:
    """uvicorn's rule: given includes add to the default includes and remove themselves from
    the default excludes, and the other way round (``--reload-exclude '*.py'``)."""
    includes = values.pop("reload_includes", None) or []
    excludes = values.pop("reload_excludes", None) or []
    if includes or excludes:
        values["reload_includes"] = tuple(
            dict.fromkeys(p for p in (*DEFAULT_RELOAD_INCLUDES, *includes) if p not in excludes)
        )
        values["reload_excludes"] = tuple(
            dict.fromkeys(p for p in (*DEFAULT_RELOAD_EXCLUDES, *excludes) if p not in includes)
        )
    if "reload_dirs" in values:
        values["reload_dirs"] = tuple(values["reload_dirs"])


def _convert(option: str, text: str, convert: Callable[[str], Any]) -> Any:
    """``convert(text)``; its ``ValueError`` becomes a ``ConfigError`` naming ``option``."""
    try:
        return convert(text)
    except ValueError as exc:  # ConfigError included: the message already says what fits
        raise ConfigError(f"{option}: {exc}") from None
