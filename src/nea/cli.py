"""The ``nea`` command: parse options (named like uvicorn's), set up logging, run the server.

Owns: the argument parser, turning option text into ``Config`` values, and the mapping from
exceptions to exit codes. It is the only place that calls ``sys.exit``. A user mistake
(bad option value, app not importable, address in use) ends with ONE line
``nea: error: ...`` and exit code 1, never a traceback; a failed lifespan startup exits 3.
Must not import the HTTP layers or the server directly (``nea._run`` does, lazily).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from nea._errors import ConfigError, LifespanStartupFailed, NeaError
from nea._sizes import parse_size
from nea.config import (
    DEFAULT_BACKLOG,
    DEFAULT_BUDGET,
    DEFAULT_BUFFER_REQUEST_BODY_BYTES,
    DEFAULT_LIMIT_REQUEST_HEADERS_BYTES,
    DEFAULT_SLOTS,
    Config,
    parse_header_option,
)

EXIT_OK = 0
EXIT_USAGE = 1  # bad option, app not importable, address in use
EXIT_STARTUP_FAILED = 3  # the application's lifespan startup failed (uvicorn uses 3 too)
EXIT_INTERRUPTED = 130  # Ctrl-C before the server had installed its signal handlers

T = TypeVar("T")


class _ParserExit(Exception):
    """Raised instead of ``sys.exit`` inside argparse, so only ``main`` exits."""

    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ParserExit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _ParserExit(status, message)


def build_parser() -> argparse.ArgumentParser:
    """The ``nea`` argument parser. Values stay text here; ``config_from_args`` converts them."""
    from nea import __version__

    parser = _Parser(prog="nea", description="Serve an ASGI application with predictable memory.")
    parser.add_argument(
        "app", metavar="APP", help="the application as 'module:attribute', e.g. 'main:app'"
    )
    parser.add_argument("--version", action="version", version=f"nea {__version__}")
    _add_application_options(parser.add_argument_group("application"))
    _add_listen_options(parser.add_argument_group("where to listen"))
    _add_memory_options(parser.add_argument_group("memory: budgets, slots, queue"))
    _add_limit_options(parser.add_argument_group("timeouts and limits"))
    _add_header_options(parser.add_argument_group("headers and proxies"))
    _add_logging_options(parser.add_argument_group("logging"))
    return parser


def _add_application_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--app-dir", default=".", help="directory put first on sys.path to import APP (.)")
    add("--factory", action="store_true", help="APP is a callable returning the application")
    add("--lifespan", default="auto", metavar="{auto,on,off}", help="lifespan protocol (auto)")
    add("--root-path", default="", help="ASGI root_path, for apps mounted below a path prefix")
    add("--workers", default="1", metavar="N", help="number of worker processes (1)")
    add("--loop", default="auto", metavar="{auto,asyncio,uvloop}", help="event loop (auto)")
    add("--http", default="auto", metavar="{auto,h11,httptools}", help="HTTP parser (auto)")


def _add_memory_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--budget", default=DEFAULT_BUDGET, metavar="SIZE", help="memory budget per request (32MiB)"
    )
    add("--slots", default=str(DEFAULT_SLOTS), metavar="N", help="requests run at once (64)")
    add("--queue", default=None, metavar="N", help="requests that may wait for a slot (2 × slots)")
    add(
        "--queue-timeout",
        default="10",
        metavar="S",
        help="longest wait for a slot, then 503 (10)",
    )
    add(
        "--meter",
        default="native",
        metavar="{native,tracemalloc,off}",
        help="how budgets are metered; off = slots only (native)",
    )
    add(
        "--memory-limit",
        default="off",
        metavar="SIZE|auto|off",
        help="hard cap on the process's memory; auto = the memory plan plus headroom (off)",
    )
    add(
        "--region",
        default="on",
        metavar="{on,off}",
        help="serve budgets from one region mapped at startup (on)",
    )
    add(
        "--prefault",
        action="store_true",
        help="touch every page of the region at startup: RSS is final from the first request",
    )
    add(
        "--release-memory",
        default="never",
        metavar="{never,idle}",
        help="give reset region pages back to the OS when no request runs (never)",
    )


def _add_listen_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--host", default="127.0.0.1", help="bind to this address (127.0.0.1)")
    add("--port", default="8000", help="bind to this TCP port; 0 picks a free one (8000)")
    add("--uds", default=None, metavar="PATH", help="bind to this Unix domain socket")
    add("--fd", default=None, metavar="N", help="serve this inherited listening socket")
    add("--backlog", default=str(DEFAULT_BACKLOG), metavar="N", help="listen backlog (2048)")
    add("--ssl-keyfile", default=None, metavar="FILE", help="TLS private key (PEM)")
    add("--ssl-certfile", default=None, metavar="FILE", help="TLS certificate chain (PEM)")


def _add_limit_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--timeout-keep-alive", default="5", metavar="S", help="idle keep-alive timeout (5)")
    add(
        "--timeout-request-headers",
        default="10",
        metavar="S",
        help="time a client has to send the whole header section, else 408 (10)",
    )
    add(
        "--timeout-request-body",
        default="60",
        metavar="S",
        help="longest pause while a request body arrives, else 408 (60)",
    )
    add(
        "--buffer-request-body",
        default=str(DEFAULT_BUFFER_REQUEST_BODY_BYTES),
        metavar="SIZE",
        help="read request bodies up to SIZE before the request takes a slot; 0: never (64KiB)",
    )
    add(
        "--timeout-graceful-shutdown",
        default=None,
        metavar="S",
        help="on shutdown, wait this long for in-flight requests (no limit)",
    )
    add("--limit-max-requests", default=None, metavar="N", help="stop after N requests")
    add(
        "--limit-request-headers",
        default=f"{DEFAULT_LIMIT_REQUEST_HEADERS_BYTES // 1024}KiB",
        metavar="SIZE",
        help="largest request line + header section, else 431 (64KiB)",
    )
    add(
        "--limit-request-body",
        default=None,
        metavar="SIZE",
        help="largest request body, else 413 (no limit)",
    )


def _add_header_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="add this header to every response (repeatable)",
    )
    add("--no-server-header", action="store_true", help="omit the 'server: nea' header")
    add("--no-date-header", action="store_true", help="omit the 'date' header")
    add(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips (on)",
    )
    add(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="comma-separated proxy addresses to trust, or '*' "
        "($FORWARDED_ALLOW_IPS, else 127.0.0.1)",
    )


def _add_logging_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--log-level",
        default="info",
        metavar="{critical,error,warning,info,debug,trace}",
        help="log level (info)",
    )
    group.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per response on 'nea.access' (on)",
    )


def config_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Config:
    """Convert parsed option text into a validated ``Config``; raise ``ConfigError``."""
    allow_ips = args.forwarded_allow_ips
    if allow_ips is None:
        allow_ips = environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    return Config(
        app=args.app,
        host=args.host,
        port=_convert("--port", args.port, _whole),
        uds=args.uds,
        fd=_optional("--fd", args.fd, _whole),
        backlog=_convert("--backlog", args.backlog, _whole),
        workers=_convert("--workers", args.workers, _whole),
        loop=args.loop,
        http=args.http,
        lifespan=args.lifespan,
        factory=args.factory,
        app_dir=args.app_dir,
        root_path=args.root_path,
        timeout_keep_alive=_convert("--timeout-keep-alive", args.timeout_keep_alive, _seconds),
        timeout_request_headers=_convert(
            "--timeout-request-headers", args.timeout_request_headers, _seconds
        ),
        timeout_request_body=_convert(
            "--timeout-request-body", args.timeout_request_body, _seconds
        ),
        buffer_request_body=_convert("--buffer-request-body", args.buffer_request_body, parse_size),
        timeout_graceful_shutdown=_optional(
            "--timeout-graceful-shutdown", args.timeout_graceful_shutdown, _seconds
        ),
        limit_max_requests=_optional("--limit-max-requests", args.limit_max_requests, _whole),
        limit_request_headers=_convert(
            "--limit-request-headers", args.limit_request_headers, parse_size
        ),
        limit_request_body=_optional("--limit-request-body", args.limit_request_body, parse_size),
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=tuple(ip.strip() for ip in allow_ips.split(",") if ip.strip()),
        headers=parse_header_option(args.header),
        server_header=not args.no_server_header,
        date_header=not args.no_date_header,
        log_level=args.log_level,
        access_log=args.access_log,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
        budget=args.budget,
        slots=_convert("--slots", args.slots, _whole),
        queue=_optional("--queue", args.queue, _whole),
        queue_timeout=_convert("--queue-timeout", args.queue_timeout, _seconds),
        meter=args.meter,
        memory_limit=args.memory_limit,
        region=args.region,
        prefault=args.prefault,
        release_memory=args.release_memory,
    )


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


def _convert(option: str, text: str, convert: Callable[[str], T]) -> T:
    """``convert(text)``; its ``ValueError`` becomes a ``ConfigError`` naming ``option``."""
    try:
        return convert(text)
    except ValueError as exc:  # ConfigError included: the message already says what fits
        raise ConfigError(f"{option}: {exc}") from None


def _optional(option: str, text: str | None, convert: Callable[[str], T]) -> T | None:
    return None if text is None else _convert(option, text, convert)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``nea`` command and ``python -m nea``; always exits."""
    sys.exit(_main(sys.argv[1:] if argv is None else list(argv)))


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ParserExit as exc:
        if exc.message:
            (sys.stderr if exc.status else sys.stdout).write(exc.message)
        return exc.status
    try:
        return _serve(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _serve(args: argparse.Namespace) -> int:
    from nea._logging import configure_logging
    from nea._run import run_config

    try:
        config = config_from_args(args, dict(os.environ))
        configure_logging(config.log_level, access_log=config.access_log)
        run_config(config)
    except NeaError as exc:
        if isinstance(exc, LifespanStartupFailed):
            # The server already logged why startup failed; the exit code says it to scripts.
            return EXIT_STARTUP_FAILED
        _error_line(str(exc))
        return EXIT_USAGE
    return EXIT_OK


def _error_line(message: str) -> None:
    # One line, whatever the exception text holds: scripts and humans read the first line.
    text = " ".join(message.split()) or "unknown error"
    sys.stderr.write(f"nea: error: {text}\n")
    sys.stderr.flush()
