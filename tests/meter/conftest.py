"""Fixtures selecting the meter under test.

``meter`` runs a test against both meters, the native one twice: with the region (outermost
budgets served from it) and with the block table only. ``native`` runs it against the
native meter, region on and off; ``native_table`` with the block table only. The native
meter's tests fail (instead of skipping) when ``NEA_REQUIRE_NATIVE=1`` and the extension is
missing, so CI cannot pass without the C extension.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nea.meter import _region, _select


def _require(name: str) -> None:
    if name == "native" and not _select.native_available():
        if os.environ.get("NEA_REQUIRE_NATIVE") == "1":
            pytest.fail("NEA_REQUIRE_NATIVE=1 but the C extension nea._meter does not import")
        pytest.skip("the C extension nea._meter is not built for this interpreter")


@contextmanager
def _using(name: str, *, region: bool) -> Iterator[str]:
    _require(name)
    previous = _select.use_meter(name)
    was = _region.set_enabled(region)
    try:
        yield name
    finally:
        _region.set_enabled(was)
        _select.restore_meter(previous)


@pytest.fixture(params=["native", "native-table", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    param: str = request.param
    with _using(param.removesuffix("-table"), region=param == "native") as name:
        yield name


@pytest.fixture(params=["region", "table"])
def native(request: pytest.FixtureRequest) -> Iterator[str]:
    with _using("native", region=request.param == "region") as name:
        yield name


@pytest.fixture
def native_table() -> Iterator[str]:
    with _using("native", region=False) as name:
        yield name


@pytest.fixture
def native_region() -> Iterator[str]:
    with _using("native", region=True) as name:
        yield name
