"""Log setup for the CLI and ``nea.run``: levels (including ``trace``) and uvicorn-like format.

Owns: the ``TRACE`` level, the ``INFO:     message`` formatter and the handlers on the
``nea`` logger tree (``nea.error`` → stderr, ``nea.access`` → stdout, as uvicorn does).
The server only logs; it never configures logging. Must not import the server.
"""

from __future__ import annotations

import logging
import sys

TRACE = 5  # below DEBUG, like uvicorn's "trace": per-connection protocol chatter

LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

ERROR_LOGGER = "nea.error"
ACCESS_LOGGER = "nea.access"


class LevelPrefixFormatter(logging.Formatter):
    """``INFO:     message``: the level name and a colon, padded so messages line up."""

    def format(self, record: logging.LogRecord) -> str:
        # "CRITICAL:" is the longest prefix (9 characters); uvicorn pads to the same width.
        prefix = f"{record.levelname}:".ljust(9)
        return f"{prefix} {super().format(record)}"


class _NeaHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks handlers installed here so configuring twice replaces rather than duplicates."""


def logging_is_configured() -> bool:
    """True when the application (or an earlier call) already set up logging handlers."""
    return bool(logging.getLogger().handlers or logging.getLogger("nea").handlers)


def configure_logging(log_level: str = "info", *, access_log: bool = True) -> None:
    """Install nea's handlers: errors to stderr, access lines to stdout (or nowhere).

    ``log_level`` is one of ``LEVELS``; it applies to both loggers. Calling it again
    replaces the handlers it installed before.
    """
    logging.addLevelName(TRACE, "TRACE")
    level = LEVELS[log_level]
    formatter = LevelPrefixFormatter("%(message)s")

    root = logging.getLogger("nea")
    _replace_handler(root, _NeaHandler(sys.stderr), formatter)
    root.setLevel(level)
    root.propagate = False

    logging.getLogger(ERROR_LOGGER).setLevel(level)

    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False
    if access_log:
        _replace_handler(access, _NeaHandler(sys.stdout), formatter)
        access.setLevel(level)
    else:
        _replace_handler(access, None, formatter)
        # Above CRITICAL: isEnabledFor() is False, so the server can skip building lines.
        access.setLevel(logging.CRITICAL + 1)


def _replace_handler(
    logger: logging.Logger, handler: logging.Handler | None, formatter: logging.Formatter
) -> None:
    for old in [h for h in logger.handlers if isinstance(h, _NeaHandler)]:
        logger.removeHandler(old)
    if handler is not None:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
