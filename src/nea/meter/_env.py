"""On/off switches of the meter read from the environment (``NEA_REGION``,
``NEA_C_LIBRARIES``).

Owns: ``switch``. Must not import other nea modules but ``nea._errors``.
"""

from __future__ import annotations

import os

from nea._errors import ConfigError

MODES = ("on", "off")


def switch(name: str) -> str:
    """``on`` unless the variable ``name`` says ``off``; ``ConfigError`` for anything else."""
    wanted = os.environ.get(name, "on").strip().lower() or "on"
    if wanted not in MODES:
        raise ConfigError(f"{name}={wanted!r}: expected 'on' or 'off'")
    return wanted
