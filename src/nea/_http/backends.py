"""Backend registry: ``--http auto|h11|httptools`` and ``--ws auto|none|websockets|wsproto``.

Owns: choosing a backend and importing it lazily (httptools is a C extension that may be
missing; wsproto is optional). Must not import asyncio, socket or anyio.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from nea._errors import ConfigError
from nea._http.parser import ParserBase, ParserLimits

ParserFactory = Callable[[ParserLimits], ParserBase]

BACKENDS = ("h11", "httptools")


def resolve_backend(name: str) -> str:
    """Map ``auto`` to ``httptools`` when it is importable, else ``h11``."""
    if name == "auto":
        return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    if name not in BACKENDS:
        raise ConfigError(f"--http: expected one of auto, h11, httptools, got {name!r}")
    return name


def parser_factory(name: str) -> ParserFactory:
    """The parser class for backend ``name`` (``auto``, ``h11`` or ``httptools``).

    Raises ``ConfigError`` when the backend is unknown or its package is not installed.
    """
    resolved = resolve_backend(name)
    try:
        if resolved == "httptools":
            from nea._http.httptools_parser import HttptoolsParser

            return HttptoolsParser
        from nea._http.h11_parser import H11Parser

        return H11Parser
    except ImportError as exc:
        raise ConfigError(
            f"--http {name}: the {resolved} package is not installed ({exc}); "
            f"install it or choose --http h11"
        ) from exc


def websocket_backend(name: str) -> str | None:
    """The WebSocket backend ``--ws`` names: ``websockets`` or ``wsproto``, or None
    (``none``, or ``auto`` with neither installed: handshakes are then served as plain
    HTTP requests). ``auto`` prefers websockets, as uvicorn does. Raises ``ConfigError``
    for a backend that is not installed."""
    if name == "none":
        return None
    if name == "auto":
        for candidate in ("websockets", "wsproto"):
            if _websocket_package_ok(candidate):
                return candidate
        return None
    if not _websocket_package_ok(name):
        raise ConfigError(
            f"--ws {name}: the {name} package is not installed (or too old: websockets "
            f"needs 13 or later for its sans-IO API); install it or choose another --ws"
        )
    return name


def _websocket_package_ok(name: str) -> bool:
    if importlib.util.find_spec(name) is None:
        return False
    if name == "websockets":
        return importlib.util.find_spec("websockets.server") is not None and _has_sans_io()
    return True


def _has_sans_io() -> bool:
    try:
        from websockets.server import ServerProtocol  # noqa: F401
    except ImportError:
        return False
    return True
