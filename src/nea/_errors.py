"""nea's exception hierarchy.

Owns: ``NeaError`` and the errors every layer shares. Budget errors live with the
meter (``nea.BudgetExceeded`` is a ``MemoryError``). Must not import other nea modules.
"""

from __future__ import annotations


class NeaError(Exception):
    """Root of nea's own errors (budget errors are ``MemoryError`` instead)."""


class ConfigError(NeaError, ValueError):
    """A configuration value is out of range or malformed.

    The message names the option, what arrived and the accepted form, so the CLI can
    print it as one line.
    """


class AppImportError(NeaError):
    """The ``module:attribute`` application string could not be imported."""


class LifespanStartupFailed(NeaError):
    """The application's lifespan startup failed (``lifespan.startup.failed`` or an error).

    ``nea.Server.serve`` raises it after logging the reason; the CLI exits with status 3.
    """
