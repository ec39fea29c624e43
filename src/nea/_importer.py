"""Loading the ASGI application named by ``Config.app``.

Owns: ``'module:attribute'`` resolution (dotted attributes allowed), ``--app-dir`` on
``sys.path``, ``--factory``, and ``AppImportError`` messages that say what was looked for and
what to do. Must not import the server or the HTTP layers.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from nea._errors import AppImportError
from nea._types import ASGIApp
from nea.config import Config


def import_app(config: Config) -> ASGIApp:
    """Return the ASGI callable for ``config``; raise ``AppImportError`` when impossible.

    Errors raised while the app's own module runs (a bug in the app) propagate unchanged,
    so their traceback points at the app.
    """
    target: Any = config.app
    if isinstance(target, str):
        if config.app_dir is not None:
            app_dir = os.path.abspath(config.app_dir)
            if app_dir not in sys.path:
                sys.path.insert(0, app_dir)
        target = import_from_string(target)
    if config.factory:
        if not callable(target):
            raise AppImportError(
                f"--factory: expected a callable that returns the app, got {target!r}"
            )
        try:
            target = target()
        except TypeError as exc:
            raise AppImportError(f"--factory: calling {config.app!r} failed: {exc}") from exc
    if not callable(target):
        raise AppImportError(
            f"APP: expected an ASGI callable, {config.app!r} is {type(target).__name__}"
        )
    app: ASGIApp = target
    return app


def import_from_string(import_string: str) -> Any:
    """Resolve ``'package.module:attr.sub'``."""
    module_name, _, attrs = import_string.partition(":")
    if not module_name or not attrs:
        raise AppImportError(
            f"APP: expected 'module:attribute' (e.g. 'main:app'), got {import_string!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_prefix(exc.name, module_name):
            raise  # a module the app imports is missing: show the app's own traceback
        raise AppImportError(
            f"APP: could not import module {module_name!r} (looked in the current directory "
            f"and --app-dir); check the name or pass --app-dir"
        ) from exc
    value: Any = module
    for attr in attrs.split("."):
        try:
            value = getattr(value, attr)
        except AttributeError:
            raise AppImportError(
                f"APP: module {module_name!r} has no attribute {attrs!r}"
            ) from None
    return value


def _is_prefix(missing: str, wanted: str) -> bool:
    return wanted == missing or wanted.startswith(missing + ".")
