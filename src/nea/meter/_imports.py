"""Module imports are never charged to a budget.

Owns: ``exempt_imports``, which also tells the meter when a module it hooks into (numpy's
array data, see ``_numpy``; the C libraries an import loads, see ``_clibs``) has just been
imported. A module imported lazily during a
request (anyio's thread backend on the first ``to_thread``, a template engine, ...) is
process state, not request memory: charging it would make the first request pay megabytes
that every later request shares. CPython runs every import of a module not yet in
``sys.modules`` through ``importlib._bootstrap._find_and_load`` (the C fast path for
already imported modules never reaches it, so this costs nothing per ``import`` of a
loaded module). The wrapper clears
the current budget while the module loads.

Must not import other nea modules.
"""

from __future__ import annotations

import importlib._bootstrap as _bootstrap
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_WRAPPED_MARK = "__nea_exempt__"


def exempt_imports(
    var: ContextVar[Any],
    set_current: Callable[[Any], None],
    on_import: dict[str, Callable[[], object]] | None = None,
    after_each: Callable[[], object] | None = None,
) -> None:
    """Make ``_find_and_load`` run with ``var`` set to ``None`` through ``set_current``
    (idempotent). ``on_import`` maps module names to calls made once that module was
    imported (first import only); ``after_each`` is called after every such import."""
    original: Callable[..., Any] = _bootstrap._find_and_load  # type: ignore[attr-defined]
    if getattr(original, _WRAPPED_MARK, False):
        return
    hooks = on_import or {}

    def _find_and_load(name: str, import_: Callable[..., Any]) -> Any:
        previous = var.get()
        if previous is None or previous.charged is None:  # no open budget charged here
            module = original(name, import_)
        else:
            # set(), never reset(): resetting to "no value" can leave CPython's contextvar
            # cache stale inside the allocator hook (docs/budgets.md).
            set_current(None)
            try:
                module = original(name, import_)
            finally:
                set_current(previous)
        if after_each is not None:
            after_each()
        hook = hooks.get(name)
        if hook is not None:
            hook()
        return module

    setattr(_find_and_load, _WRAPPED_MARK, True)
    _bootstrap._find_and_load = _find_and_load  # type: ignore[attr-defined]
