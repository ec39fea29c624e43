"""Meter selection for the test client tests (same rules as tests/meter): ``meter`` runs a
test under both meters, failing instead of skipping the native one when
``NEA_REQUIRE_NATIVE=1`` and the extension is missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import use_meter


@pytest.fixture(params=["native", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from use_meter(request.param)
