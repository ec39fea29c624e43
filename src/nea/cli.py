"""The ``nea`` command: parse options (named like uvicorn's), set up logging, run the server.

Owns: the argument parser built from ``nea._options`` (which also reads ``NEA_<OPTION>``
variables and leaves defaults to ``Config``), the rejection of uvicorn options nea does not
have, and the mapping from exceptions to exit codes. It is the only place that calls
``sys.exit``. A user mistake (bad option value, app not importable, address in use) ends with
ONE line ``nea: error: ...`` and exit code 1, never a traceback; a failed lifespan startup
exits 3. Must not import the HTTP layers or the server directly (``nea._run`` does, lazily).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from nea._errors import ConfigError, LifespanStartupFailed, NeaError
from nea._options import (
    OPTIONS,
    UNSUPPORTED,
    Option,
    all_options,
    environment_values,
    option_values,
)
from nea.config import Config

__all__ = [
    "UNSUPPORTED",
    "all_options",
    "build_parser",
    "config_from_args",
    "environment_values",
    "main",
]

EXIT_OK = 0
EXIT_USAGE = 1  # bad option, app not importable, address in use
EXIT_STARTUP_FAILED = 3  # the application's lifespan startup failed (uvicorn uses 3 too)
EXIT_INTERRUPTED = 130  # Ctrl-C before the server had installed its signal handlers


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


class _Reject(argparse.Action):
    """Stops parsing at a uvicorn option nea does not have, saying why in one line."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"{option_string}: not supported by nea: {self.help}")


def build_parser() -> argparse.ArgumentParser:
    """The ``nea`` argument parser. Values stay text here; ``config_from_args`` converts them.

    Every option defaults to None (not given), so ``config_from_args`` can tell the command
    line from the environment from ``Config``'s defaults.
    """
    from nea import __version__

    parser = _Parser(prog="nea", description="Serve an ASGI application with predictable memory.")
    parser.add_argument(
        "app",
        metavar="APP",
        nargs="?",
        default=None,
        help="the application as 'module:attribute', e.g. 'main:app' ($NEA_APP)",
    )
    parser.add_argument("--version", action="version", version=f"nea {__version__}")
    for title, options in OPTIONS:
        group = parser.add_argument_group(title)
        for option in options:
            _add(group, option)
    rejected = parser.add_argument_group("uvicorn options nea does not have (rejected)")
    for item in UNSUPPORTED:
        rejected.add_argument(
            item.flag,
            action=_Reject,
            nargs=None if item.takes_value else 0,
            help=item.reason,
            metavar="VALUE" if item.takes_value else None,
            dest="rejected_" + item.flag.lstrip("-").replace("-", "_"),
            default=argparse.SUPPRESS,
        )
    return parser


def _add(group: argparse._ArgumentGroup, option: Option) -> None:
    help_text = f"{option.help} [${option.env}]"
    if option.kind == "flag":
        group.add_argument(
            option.flag, dest=option.field, action="store_const", const="1", help=help_text
        )
    elif option.kind == "switch":
        group.add_argument(
            option.flag,
            dest=option.field,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )
    elif option.kind == "append":
        group.add_argument(
            option.flag, dest=option.field, action="append", metavar=option.metavar, help=help_text
        )
    else:
        group.add_argument(option.flag, dest=option.field, metavar=option.metavar, help=help_text)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Convert parsed option text (then ``NEA_*`` variables) into a validated ``Config``.

    Raises ``ConfigError`` naming the option (and the variable, when the value came from
    one) and the accepted form.
    """
    app = args.app if args.app is not None else environ.get("NEA_APP")
    if app is None:
        raise ConfigError("the following arguments are required: APP (or set NEA_APP)")
    return Config(app=app, **option_values(args, environ))


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
    from nea._logging import configure_logging_from
    from nea._run import run_config

    try:
        config = config_from_args(args, os.environ)
        configure_logging_from(config)
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
