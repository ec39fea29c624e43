"""nea: an ASGI server with predictable memory.

The public API is re-exported here; every other module is private. ``run`` and ``Server``
are imported on first use so that ``import nea`` does not load asyncio and the server.
"""

from typing import TYPE_CHECKING, Any

from nea._errors import AppImportError, ConfigError, LifespanStartupFailed, NeaError
from nea._sizes import format_size, parse_size
from nea._sockets import BindError
from nea.config import Config
from nea.meter import Budget, BudgetExceeded, BudgetStatistics, budget, current_budget

if TYPE_CHECKING:
    from nea._executor import ContextThreadPoolExecutor
    from nea._run import run
    from nea.server import Server

__all__ = [
    "AppImportError",
    "BindError",
    "Budget",
    "BudgetExceeded",
    "BudgetStatistics",
    "Config",
    "ConfigError",
    "ContextThreadPoolExecutor",
    "LifespanStartupFailed",
    "NeaError",
    "Server",
    "budget",
    "current_budget",
    "format_size",
    "parse_size",
    "run",
]
__version__ = "0.1.0"

# Tracebacks and reprs name the public spelling (nea.BudgetExceeded), not the private module.
_PUBLIC_TYPES: tuple[type, ...] = (
    AppImportError,
    BindError,
    Budget,
    BudgetExceeded,
    BudgetStatistics,
    Config,
    ConfigError,
    LifespanStartupFailed,
    NeaError,
)
for _public in _PUBLIC_TYPES:
    _public.__module__ = "nea"

_LAZY = {
    "run": "nea._run",
    "Server": "nea.server",
    "ContextThreadPoolExecutor": "nea._executor",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'nea' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value
