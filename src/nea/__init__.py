"""nea: an ASGI server with predictable memory.

The public API is re-exported here; every other module is private.
"""

from nea._errors import AppImportError, ConfigError, LifespanStartupFailed, NeaError
from nea._sizes import format_size, parse_size
from nea._sockets import BindError
from nea.config import Config
from nea.server import Server

__all__ = [
    "AppImportError",
    "BindError",
    "Config",
    "ConfigError",
    "LifespanStartupFailed",
    "NeaError",
    "Server",
    "format_size",
    "parse_size",
]
__version__ = "0.1.0"
