"""``--memory-summary`` marks a test whose budget tripped, with the refused size: its
peak is only what the budget granted."""

from __future__ import annotations

import pytest

INNER_INI = """
[pytest]
addopts = -p no:cacheprovider --strict-markers
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

TESTS = """
import pytest

MiB = 1024 * 1024

@pytest.mark.memory_budget("4MiB")
def test_hog():
    data = bytearray(64 * MiB)

@pytest.mark.memory_budget("16MiB")
def test_fits():
    data = bytearray(1 * MiB)
"""


def test_summary_marks_a_tripped_test_and_the_refused_size(
    pytester: pytest.Pytester, meter: str
) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_trip=TESTS)
    result = pytester.runpytest("--memory-summary", "2")
    result.assert_outcomes(passed=1, failed=1)
    if meter == "native":
        hog = "*4.0 MiB  test_trip.py::test_hog  TRIPPED (a 64.0 MiB allocation crossed it)"
    else:
        hog = "*4.0 MiB  test_trip.py::test_hog  TRIPPED (limit passed, measured on exit)"
    result.stdout.fnmatch_lines(["*nea memory summary*", "*peak*budget*test"])
    result.stdout.fnmatch_lines([hog])
    fits = [line for line in result.stdout.lines if line.endswith("test_trip.py::test_fits")]
    assert len(fits) == 1, result.stdout.str()


# The guard docs/testing.md gives for ``--strict-config`` runs with nea disabled.
GUARD = """
import pytest

def pytest_addoption(parser, pluginmanager):
    if pluginmanager.is_blocked("nea"):
        parser.addini("memory_budget", "nea's default test budget (nea is disabled)")
"""


def test_strict_config_guard_for_runs_without_nea(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "memory_budget = 64MiB\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    unguarded = pytester.runpytest("--strict-config", "-p", "no:nea")
    unguarded.stderr.fnmatch_lines(["*Unknown config option: memory_budget*"])
    pytester.makeconftest(GUARD)
    pytester.runpytest("--strict-config", "-p", "no:nea").assert_outcomes(passed=1)
    pytester.runpytest("--strict-config").assert_outcomes(
        passed=1
    )  # with nea, its own option is used
