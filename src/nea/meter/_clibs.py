"""C libraries' malloc blocks, charged to budgets by the native meter.

Owns: ``NEA_C_LIBRARIES`` (``on`` unless set to ``off``) and ``patch(ext)``. The C extension
points the malloc family of loaded shared objects (Pillow, lxml, sqlite3, OpenSSL, ...) at
wrappers that charge each block to the budget of the thread that made it (csrc/clibs.c,
docs/budgets.md). This runs when the meter's hooks are installed and after every import of
a module not imported before, so libraries an import loads are patched before they run.
Must not import the server or ``nea.meter._budget``.
"""

from __future__ import annotations

from typing import Any

from nea.meter._env import switch


def env_mode() -> str:
    """``NEA_C_LIBRARIES`` (``on`` unless set to ``off``); ``ConfigError`` for anything else."""
    return switch("NEA_C_LIBRARIES")


def patch(ext: Any) -> None:
    """Patch the shared objects loaded since the last call (cheap when none were)."""
    ext.patch_c_libraries()


def info(ext: Any) -> dict[str, int]:
    """Whether this platform can charge C libraries, how many objects and relocation slots
    point at nea's wrappers, and how many objects were looked at."""
    return dict(ext.c_libraries())
