"""nea: an ASGI server with predictable memory.

The public API is re-exported here; every other module is private.
"""

from nea._errors import ConfigError, NeaError
from nea._sizes import format_size, parse_size
from nea.config import Config

__all__ = [
    "Config",
    "ConfigError",
    "NeaError",
    "format_size",
    "parse_size",
]
__version__ = "0.1.0"
