"""The one parser and formatter for memory sizes, used by the CLI, the middleware,
the pytest marker and ``nea.budget``.

Owns: ``parse_size`` and ``format_size``. Must not import other nea modules.

Units: ``KiB/MiB/GiB/TiB`` and the single letters ``K/M/G/T`` are binary (1024),
``kB/KB/MB/GB/TB`` are decimal (1000), a bare number is bytes.
"""

from __future__ import annotations

import re
from functools import lru_cache

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")

ACCEPTED_FORMS = (
    "a number of bytes (1024) or a number with a unit: "
    "KiB/MiB/GiB or K/M/G (binary, e.g. '512KiB', '64M', '1.5GiB'), "
    "kB/MB/GB (decimal, e.g. '100MB')"
)


def parse_size(value: int | str) -> int:
    """Return ``value`` as a whole number of bytes.

    Raises ``ValueError`` naming the accepted forms when ``value`` is negative, not
    a number, or has an unknown unit. Fractions are rounded down to whole bytes.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}; accepted: {ACCEPTED_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}; accepted: {ACCEPTED_FORMS}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size, got {value!r}; accepted: {ACCEPTED_FORMS}")
    return _parse_text(value)


# Remembered: per-request code such as ``async with nea.budget("16MiB")`` parses the same
# few strings over and over (the regex costs about 2 µs, more than entering the budget).
# Bounded, so sizes built from request data cannot grow it without limit; errors are not
# remembered (a failed call caches nothing).
@lru_cache(maxsize=256)
def _parse_text(value: str) -> int:
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"cannot parse size {value!r}; accepted: {ACCEPTED_FORMS}")
    number, unit = match.groups()
    multiplier = _UNITS.get(unit.lower())
    # "KB" and "kB" are decimal, but "Kb"/"kb" read as kilobits to some; accept only
    # the spellings documented above for the two-letter decimal units.
    if multiplier is None or (len(unit) == 2 and unit[1] != "B"):
        raise ValueError(f"unknown size unit {unit!r} in {value!r}; accepted: {ACCEPTED_FORMS}")
    return int(float(number) * multiplier)


def format_size(n: int | float) -> str:
    """Format a byte count with binary units, e.g. ``16.0 MiB``, ``512 B``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        # Switch units before one decimal would round up to "1024.0" of the smaller one.
        if unit == "GiB" or abs(size) < (1024 if unit == "B" else 1023.95):
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
