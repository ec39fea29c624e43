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


@pytest.mark.parametrize("seed", [1, 2])
def test_c_library_stress_from_many_threads(seed: int) -> None:
    """tests/meter/_clib_stress.py in its own interpreter, with a deadline."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    completed = subprocess.run(
        [sys.executable, "-m", "tests.meter._clib_stress", str(seed), "3"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "NEA_METER": "native"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert completed.stdout.strip().endswith("errors=[]")
