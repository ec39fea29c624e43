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
    DEFAULT_LIMIT_REQUEST_HEADERS_BYTES,
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

    parser = _Parser(
        prog="nea",
        description="Serve an ASGI application with predictable memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("app", metavar="APP", help="the application as 'module:attribute', e.g. 'main:app'")
    add("--version", action="version", version=f"nea {__version__}")
    add("--host", default="127.0.0.1", help="bind to this address")
    add("--port", default="8000", help="bind to this TCP port (0 picks a free one)")
    add("--uds", default=None, help="bind to this Unix domain socket path")
    add("--fd", default=None, help="serve on this already-listening socket file descriptor")
    add("--backlog", default=str(DEFAULT_BACKLOG), help="listen backlog")
    add("--workers", default="1", help="number of worker processes")
    add("--loop", default="auto", metavar="{auto,asyncio,uvloop}", help="event loop")
    add("--http", default="auto", metavar="{auto,h11,httptools}", help="HTTP parser")
    add("--lifespan", default="auto", metavar="{auto,on,off}", help="lifespan protocol")
    add("--timeout-keep-alive", default="5", metavar="SECONDS", help="idle keep-alive timeout")
    add(
        "--timeout-request-headers",
        default="10",
        metavar="SECONDS",
        help="time a client has to send the full request headers",
    )
    add(
        "--timeout-graceful-shutdown",
        default=None,
        metavar="SECONDS",
        help="on shutdown, wait this long for in-flight requests (default: no limit)",
    )
    add("--limit-max-requests", default=None, metavar="N", help="exit after N requests")
    add(
        "--limit-request-headers",
        default=f"{DEFAULT_LIMIT_REQUEST_HEADERS_BYTES // 1024}KiB",
        metavar="SIZE",
        help="largest request line + header section",
    )
    add(
        "--limit-request-body",
        default=None,
        metavar="SIZE",
        help="largest request body (default: no limit)",
    )
    add("--root-path", default="", help="ASGI root_path, for apps mounted below a path prefix")
    add(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips",
    )
    add(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="comma-separated proxy addresses to trust, or '*' "
        "(default: $FORWARDED_ALLOW_IPS or 127.0.0.1)",
    )
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
        "--log-level",
        default="info",
        metavar="{critical,error,warning,info,debug,trace}",
        help="log level",
    )
    add(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request on 'nea.access'",
    )
    add("--app-dir", default=".", help="directory put first on sys.path to import APP")
    add("--factory", action="store_true", help="APP is a callable returning the application")
    add("--ssl-keyfile", default=None, help="TLS private key file")
    add("--ssl-certfile", default=None, help="TLS certificate chain file")
    return parser


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
