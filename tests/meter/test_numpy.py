"""numpy's array data is charged to budgets (native meter, NEP 49 handler).

The oracle is tracemalloc's numpy domain (389047), where numpy registers every array
buffer it allocates, independently of nea."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import pytest

import nea
from nea import BudgetExceeded, budget

np = pytest.importorskip("numpy")

MiB = 1024 * 1024
NUMPY_DOMAIN = 389047


def _ensure_installed() -> None:
    with budget("1MiB"):
        pass  # installs the meter's hooks, and numpy's handler since numpy is imported


def test_array_data_is_charged_exactly(native: str) -> None:
    _ensure_installed()
    started = not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        with budget("1GiB") as b:
            arrays = [np.ones(10**6), np.empty((1000, 500)), np.zeros(3 * 10**5, dtype=np.int32)]
            snap = tracemalloc.take_snapshot()
            live = b.live
            del arrays
    finally:
        if started:
            tracemalloc.stop()
    truth = sum(t.size for t in snap.traces if t.domain == NUMPY_DOMAIN)
    assert truth >= 8 * MiB
    assert truth <= live <= truth + 64 * 1024  # plus the array objects themselves
    assert b.statistics().retained < 64 * 1024  # freed inside: un-charged


def test_an_array_past_the_limit_trips_and_past_the_ceiling_is_refused(native: str) -> None:
    _ensure_installed()
    reached = []
    with pytest.raises(BudgetExceeded), budget("32MiB") as b:
        a = np.ones(5 * 10**6)  # 40 MB: crosses the limit, within the ceiling
        reached.append(a.nbytes)
    assert reached == [] and b.tripped and b.statistics().refused == 0
    with pytest.raises(BudgetExceeded) as info, budget("4MiB") as c:
        np.ones(10**8)  # 800 MB: refused; numpy raises MemoryError itself
    assert c.statistics().refused == 1 and c.peak < 4 * MiB
    assert isinstance(info.value.__cause__, MemoryError)


def test_arrays_made_outside_a_budget_are_not_uncharged_inside_it(native: str) -> None:
    _ensure_installed()
    outside = np.ones(2 * 10**6)
    with budget("64MiB") as b:
        inside = np.ones(10**6)
        del outside  # made outside: frees nothing of this budget
        assert b.live >= 8 * 10**6
        del inside
    assert b.live < 64 * 1024


def test_both_meters_agree_on_array_data(native: str) -> None:
    _ensure_installed()
    with budget("1GiB") as native_budget:
        a = np.ones(4 * 10**6)
        del a
    previous = nea.meter._select.use_meter("tracemalloc")
    try:
        with budget("1GiB") as traced:
            a = np.ones(4 * 10**6)
            del a
    finally:
        nea.meter._select.restore_meter(previous)
    assert abs(native_budget.peak - traced.peak) <= 0.05 * traced.peak


def test_numpy_imported_after_the_hooks_is_charged(native: str) -> None:
    code = (
        "import nea\n"
        "with nea.budget('1MiB'): pass\n"  # hooks installed before numpy is imported
        "import numpy as np\n"
        "with nea.budget('1GiB') as b:\n"
        "    a = np.ones(10**6)\n"
        "print(b.peak >= 8 * 10**6)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
