"""Meter selection for the test client tests (same rules as tests/meter): ``meter`` runs a
test under both meters, failing instead of skipping the native one when
``NEA_REQUIRE_NATIVE=1`` and the extension is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nea.meter import _select


@pytest.fixture(params=["native", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if name == "native" and not _select.native_available():
        if os.environ.get("NEA_REQUIRE_NATIVE") == "1":
            pytest.fail("NEA_REQUIRE_NATIVE=1 but the C extension nea._meter does not import")
        pytest.skip("the C extension nea._meter is not built for this interpreter")
    previous = _select.use_meter(name)
    try:
        yield name
    finally:
        _select.restore_meter(previous)
