"""numpy's array data, charged to budgets by the native meter.

Owns: ``install_if_imported()``. The C extension wraps numpy's default data-memory handler
(NEP 49) in place, so array data made in any context is charged like any other block (see
csrc/numpy.c and docs/budgets.md). nea never imports numpy: this runs when the meter's
hooks are installed (if numpy is already imported) and right after numpy's first import.
Must not import numpy at module level, the server or ``nea.meter._budget``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

logger = logging.getLogger("nea.error")


def install_if_imported(ext: Any) -> bool:
    """Wrap numpy's handler if numpy is imported (once; later calls are no-ops). Returns
    whether array data is charged. A handler nea cannot wrap is logged once, not raised:
    budgets then charge everything else as before."""
    if "numpy" not in sys.modules:
        return False
    try:
        # In an empty context numpy's handler contextvar gives its default handler, even
        # where an app set its own handler in the current context.
        contextvars.Context().run(ext.numpy_install)
    except (ImportError, RuntimeError, AttributeError, ValueError) as exc:
        logger.warning("nea: numpy's array data is not charged to budgets: %s", exc)
        return False
    return True
