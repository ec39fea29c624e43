"""nea: an ASGI server with predictable memory.

The public API is re-exported here; every other module is private.
"""

from nea._errors import ConfigError, NeaError
from nea._sizes import format_size, parse_size
from nea.config import Config
from nea.meter import Budget, BudgetExceeded, BudgetStatistics, budget, current_budget

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetStatistics",
    "Config",
    "ConfigError",
    "NeaError",
    "budget",
    "current_budget",
    "format_size",
    "parse_size",
]
__version__ = "0.1.0"
