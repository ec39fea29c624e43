"""Fixtures selecting the meter under test.

``meter`` runs a test against both meters. The native meter's tests fail (instead of
skipping) when ``NEA_REQUIRE_NATIVE=1`` and the extension is missing, so CI cannot pass
without the C extension.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nea.meter import _select


def _require(name: str) -> None:
    if name == "native" and not _select.native_available():
        if os.environ.get("NEA_REQUIRE_NATIVE") == "1":
            pytest.fail("NEA_REQUIRE_NATIVE=1 but the C extension nea._meter does not import")
        pytest.skip("the C extension nea._meter is not built for this interpreter")


@pytest.fixture(params=["native", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    _require(name)
    previous = _select.use_meter(name)
    try:
        yield name
    finally:
        _select.restore_meter(previous)


@pytest.fixture
def native() -> Iterator[str]:
    _require("native")
    previous = _select.use_meter("native")
    try:
        yield "native"
    finally:
        _select.restore_meter(previous)
