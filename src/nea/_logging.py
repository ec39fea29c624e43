"""Log setup for the CLI and ``nea.run``: levels (including ``trace``) and uvicorn-like format.

Owns: the ``TRACE`` level, the ``INFO:     message`` formatter (coloured level names with
``--use-colors``, the process id after the level under ``--workers``), the handlers on the
``nea`` logger tree (``nea.error`` → stderr, ``nea.access`` → stdout, as uvicorn does) and
``--log-config`` files (JSON, YAML, INI, as uvicorn reads them).
The server only logs; it never configures logging. Must not import the server.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from nea._errors import ConfigError

if TYPE_CHECKING:
    from nea.config import Config

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


# uvicorn's level colours (ANSI): trace blue, debug cyan, info green, warning yellow,
# error red, critical bright red.
LEVEL_COLORS: dict[int, str] = {
    TRACE: "\x1b[34m",
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[91m",
}
RESET = "\x1b[0m"


class LevelPrefixFormatter(logging.Formatter):
    """``INFO:     message``: the level name and a colon, padded so messages line up.

    ``use_colors`` colours the level name; ``show_pid`` puts ``[pid]`` before the message
    (every line of every worker says which process wrote it).
    """

    def __init__(
        self, fmt: str | None = "%(message)s", *, use_colors: bool = False, show_pid: bool = False
    ) -> None:
        super().__init__(fmt)
        self.use_colors = use_colors
        self.show_pid = show_pid

    def format(self, record: logging.LogRecord) -> str:
        # "CRITICAL:" is the longest prefix (9 characters); uvicorn pads to the same width.
        name = f"{record.levelname}:"
        padding = " " * (9 - len(name))
        if self.use_colors:
            name = f"{LEVEL_COLORS.get(record.levelno, '')}{name}{RESET}"
        pid = f"[{record.process}] " if self.show_pid else ""
        return f"{name}{padding} {pid}{super().format(record)}"


class _NeaHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks handlers installed here so configuring twice replaces rather than duplicates."""


def logging_is_configured() -> bool:
    """True when the application (or an earlier call) already set up logging handlers."""
    return bool(logging.getLogger().handlers or logging.getLogger("nea").handlers)


def configure_logging(
    log_level: str = "info",
    *,
    access_log: bool = True,
    use_colors: bool | None = None,
    show_pid: bool = False,
    log_config: str | None = None,
) -> None:
    """Install nea's handlers: errors to stderr, access lines to stdout (or nowhere).

    ``log_level`` is one of ``LEVELS``; it applies to both loggers. ``use_colors`` None
    colours when the stream is a terminal. ``log_config`` (a .json, .yaml/.yml or .ini
    file) is applied after nea's own set-up, as uvicorn does, so it may replace any of it;
    ``ConfigError`` when it cannot be read. Calling it again replaces the handlers it
    installed before.
    """
    logging.addLevelName(TRACE, "TRACE")
    level = LEVELS[log_level]

    root = logging.getLogger("nea")
    _replace_handler(root, _handler(sys.stderr, use_colors, show_pid))
    root.setLevel(level)
    root.propagate = False

    logging.getLogger(ERROR_LOGGER).setLevel(level)

    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False
    if access_log:
        _replace_handler(access, _handler(sys.stdout, use_colors, show_pid))
        access.setLevel(level)
    else:
        _replace_handler(access, None)
        # Above CRITICAL: isEnabledFor() is False, so the server can skip building lines.
        access.setLevel(logging.CRITICAL + 1)
    if log_config is not None:
        apply_log_config(log_config)


def configure_logging_from(config: Config, *, show_pid: bool | None = None) -> None:
    """``configure_logging`` with ``config``'s options; the pid shows under ``--workers``."""
    configure_logging(
        config.log_level,
        access_log=config.access_log,
        use_colors=config.use_colors,
        show_pid=config.workers > 1 if show_pid is None else show_pid,
        log_config=config.log_config,
    )


def apply_log_config(path: str) -> None:
    """Apply a logging configuration file: JSON or YAML (``dictConfig``), else INI
    (``fileConfig``), keeping loggers that already exist. ``ConfigError`` on failure."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as file:
                logging.config.dictConfig(json.load(file))
        elif path.endswith((".yaml", ".yml")):
            logging.config.dictConfig(_load_yaml(path))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, AttributeError, ImportError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"--log-config: cannot apply {path!r} (expected a .json, .yaml or .ini logging "
            f"configuration): {reason}"
        ) from None


def _load_yaml(path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "--log-config: a YAML file needs PyYAML; install nea[standard] or use .json/.ini"
        ) from None
    with open(path, encoding="utf-8") as file:
        try:
            return yaml.safe_load(file)
        except yaml.YAMLError as exc:
            raise ValueError(str(exc)) from None


def _handler(stream: TextIO, use_colors: bool | None, show_pid: bool) -> logging.Handler:
    if use_colors is None:
        use_colors = _is_terminal(stream)
    handler = _NeaHandler(stream)
    handler.setFormatter(LevelPrefixFormatter(use_colors=use_colors, show_pid=show_pid))
    return handler


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and "NO_COLOR" not in os.environ
    except (AttributeError, ValueError):
        return False


def _replace_handler(logger: logging.Logger, handler: logging.Handler | None) -> None:
    for old in [h for h in logger.handlers if isinstance(h, _NeaHandler)]:
        logger.removeHandler(old)
    if handler is not None:
        logger.addHandler(handler)
