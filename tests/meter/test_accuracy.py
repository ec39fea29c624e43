"""The native meter's ``peak`` against tracemalloc, the independent oracle, on
deterministic workloads: within 5 %."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable

import pytest

from nea import budget

JSON_DOC = [
    {"id": i, "name": f"item-{i}", "tags": ["a", "b", "c"], "score": i * 0.5} for i in range(12_000)
]


def small_strings() -> object:
    return [str(i) * 3 for i in range(100_000)]


def dict_10k() -> object:
    return {i: str(i) for i in range(10_000)}


def bytearray_growth() -> object:
    data = bytearray()
    for _ in range(2_000):
        data += b"x" * 1000
    return data


def json_1mb() -> object:
    text = json.dumps(JSON_DOC)
    assert 900_000 < len(text) < 1_300_000
    return text


WORKLOADS: dict[str, Callable[[], object]] = {
    "100k small str": small_strings,
    "10k dict": dict_10k,
    "bytearray growth": bytearray_growth,
    "json.dumps 1 MB": json_1mb,
}


def _tracemalloc_peak(work: Callable[[], object]) -> int:
    assert not tracemalloc.is_tracing()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = work()
        peak = tracemalloc.get_traced_memory()[1] - base
        del result
    finally:
        tracemalloc.stop()
    return peak


def _native_peak(work: Callable[[], object]) -> int:
    gc.collect()
    with budget("1GiB") as b:
        result = work()
        del result
    return b.peak


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_native_peak_matches_tracemalloc_within_5_percent(native: str, name: str) -> None:
    work = WORKLOADS[name]
    work()  # warm caches, free lists and lazily built state outside both measurements
    expected = _tracemalloc_peak(work)
    measured = _native_peak(work)
    assert expected > 500_000
    assert abs(measured - expected) <= 0.05 * expected, (name, measured, expected)
