"""``--reload``: watch files with watchfiles and tell the supervisor when to restart.

Owns: which files count (``--reload-dir``, ``--reload-include``, ``--reload-exclude``, on top
of watchfiles' own ignore list: ``.git``, ``__pycache__``, ``.venv``, ...) and the watching
thread. The supervisor (``nea._supervisor``) owns the processes: it restarts its one
worker when ``on_change`` is called. Must not import the server.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any

from nea._errors import ConfigError
from nea._logging import ERROR_LOGGER
from nea.config import Config

logger = logging.getLogger(ERROR_LOGGER)


class FileFilter:
    """True for a changed path worth a restart: it matches an include glob, no exclude glob,
    and watchfiles' default filter keeps it."""

    def __init__(self, includes: Sequence[str], excludes: Sequence[str]) -> None:
        import watchfiles

        self.includes = tuple(includes)
        self.excludes = tuple(excludes)
        self._default = watchfiles.DefaultFilter()

    def __call__(self, change: Any, path: str) -> bool:
        if not self._default(change, path):
            return False
        pure = PurePath(path)
        if not any(pure.match(pattern) for pattern in self.includes):
            return False
        return not any(pure.match(pattern) for pattern in self.excludes)


def watched_dirs(config: Config) -> list[Path]:
    """``--reload-dir`` directories (resolved), or the current directory."""
    dirs = [Path(d).resolve() for d in config.reload_dirs] or [Path.cwd()]
    for path in dirs:
        if not path.is_dir():
            raise ConfigError(f"--reload-dir: expected an existing directory, got {str(path)!r}")
    return dirs


class Watcher:
    """Runs ``watchfiles.watch`` in a daemon thread; ``on_change(paths)`` is called from that
    thread for every batch of relevant changes. ``stop()`` ends the thread."""

    def __init__(self, config: Config, on_change: Callable[[list[str]], None]) -> None:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--reload: needs watchfiles; install nea[standard] (pip install 'nea[standard]')"
            ) from None
        self._dirs = watched_dirs(config)
        self._filter = FileFilter(config.reload_includes, config.reload_excludes)
        self._debounce_ms = max(1, int(config.reload_delay * 1000))
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nea-reload", daemon=True)

    @property
    def dirs(self) -> list[Path]:
        return self._dirs

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import watchfiles

        for changes in watchfiles.watch(
            *self._dirs,
            watch_filter=self._filter,
            debounce=self._debounce_ms,
            step=min(50, self._debounce_ms),
            stop_event=self._stop,
            raise_interrupt=False,
        ):
            paths = sorted({_relative(path) for _, path in changes})
            if paths:
                self._on_change(paths)


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path
