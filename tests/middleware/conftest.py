"""Meter selection for the admission and middleware tests (the same rules as tests/meter):
``meter`` runs a test under both meters, ``native`` only under the C extension, failing
instead of skipping when ``NEA_REQUIRE_NATIVE=1``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nea.meter import _select


def _use(name: str) -> Iterator[str]:
    if name == "native" and not _select.native_available():
        if os.environ.get("NEA_REQUIRE_NATIVE") == "1":
            pytest.fail("NEA_REQUIRE_NATIVE=1 but the C extension nea._meter does not import")
        pytest.skip("the C extension nea._meter is not built for this interpreter")
    previous = _select.use_meter(name)
    try:
        yield name
    finally:
        _select.restore_meter(previous)


@pytest.fixture(params=["native", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _use(request.param)


@pytest.fixture
def native() -> Iterator[str]:
    yield from _use("native")
