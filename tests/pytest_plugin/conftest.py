"""Fixtures for the pytest plugin's tests: the meter under test and an ini file for the
inner ``pytester`` runs.

The inner runs are in-process (``pytester.runpytest``), so the meter the outer test selects
with ``meter``/``native`` is the one the inner run's budgets use. The native meter's tests
fail instead of skipping when ``NEA_REQUIRE_NATIVE=1`` and the extension is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import use_meter

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


@pytest.fixture(params=["native", "tracemalloc"])
def meter(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from use_meter(request.param)


@pytest.fixture
def native() -> Iterator[str]:
    yield from use_meter("native")


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """``pytester`` with the inner runs' ini file in place."""
    pytester.makeini(INNER_INI)
    return pytester
