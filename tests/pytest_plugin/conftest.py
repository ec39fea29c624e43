"""Fixtures for the pytest plugin's tests: the meter under test and an ini file for the
inner ``pytester`` runs.

The inner runs are in-process (``pytester.runpytest``), so the meter the outer test selects
with ``meter``/``native`` is the one the inner run's budgets use. The native meter's tests
fail instead of skipping when ``NEA_REQUIRE_NATIVE=1`` and the extension is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nea.meter import _select

# ``pytester`` is enabled with ``-p pytester`` in pyproject's addopts: ``pytest_plugins``
# in a conftest below the rootdir is an error when the whole suite is collected.

# The inner runs' configuration: strict like the project's own, and explicit about
# pytest-asyncio's loop scope so it does not warn.
INNER_INI = """
[pytest]
addopts = -p no:cacheprovider --strict-markers
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


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


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """``pytester`` with the inner runs' ini file in place."""
    pytester.makeini(INNER_INI)
    return pytester
