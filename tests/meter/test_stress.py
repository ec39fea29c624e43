"""The randomized stress (tests/meter/_stress.py) in the normal suite, native meter."""

from __future__ import annotations

import gc

import pytest

from nea import budget

from ._stress import run

KiB = 1024


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_randomized_stress_keeps_the_accounting_consistent(native: str, seed: int) -> None:
    from nea import _meter

    report = run(seed, tasks=6, rounds=6)
    assert report.errors == []
    assert report.budgets > 50
    assert report.tripped > 0 and report.refusals > 0
    gc.collect()
    info = _meter.table_info()
    assert info["open"] == 0
    assert info["forwarding"] == 0
    # the meter still measures exactly afterwards
    with budget("16MiB") as b:
        data = bytearray(1024 * KiB)
        assert 1024 * KiB <= b.live < 1024 * KiB + 4 * KiB
        del data
