"""The ``memory_budget`` ini option: a default budget for every test; the marker wins."""

from __future__ import annotations

import pytest

from .conftest import INNER_INI
from .test_marker import exceeded_lines

TESTS = """
import pytest
import nea

def test_default():
    assert nea.current_budget().limit == 1024 * 1024

def test_hog():
    data = bytearray(8 * 1024 * 1024)
    assert len(data) > 0

@pytest.mark.memory_budget("16MiB")
def test_override():
    assert nea.current_budget().limit == 16 * 1024 * 1024
    data = bytearray(8 * 1024 * 1024)
    assert len(data) > 0

@pytest.mark.memory_budget(None)
def test_opt_out():
    assert nea.current_budget() is None
    data = bytearray(8 * 1024 * 1024)
    assert len(data) > 0
"""


def test_ini_default_applies_to_every_test_and_marker_overrides_it(
    pytester: pytest.Pytester, meter: str
) -> None:
    pytester.makeini(INNER_INI + "memory_budget = 1MiB\n")
    pytester.makepyfile(test_default=TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_hog _*",
            *exceeded_lines(meter, "test_default.py:8 in test_hog", "the memory_budget ini option"),
        ],
        consecutive=True,
    )


def test_ini_default_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        import nea

        def test_default():
            assert nea.current_budget().limit == 2 * 1024 * 1024
        """
    )
    pytester.runpytest("-o", "memory_budget=2MiB").assert_outcomes(passed=1)


def test_malformed_ini_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "memory_budget = plenty\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ini option memory_budget: cannot parse size 'plenty'; accepted: *"]
    )
