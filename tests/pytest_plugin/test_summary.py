"""``--memory-summary N``: the N tests with the highest peak, after the run."""

from __future__ import annotations

import pytest

TESTS = """
import pytest

MiB = 1024 * 1024

def test_one():
    data = bytearray(1 * MiB)

@pytest.mark.memory_budget("16MiB")
def test_three():
    data = bytearray(3 * MiB)

def test_two():
    data = bytearray(2 * MiB)

def test_none():
    pass
"""

# The summary of TESTS with --memory-summary 2, in order.
TOP_TWO = [
    "*= nea memory summary: top 2 tests by peak =*",
    "      peak      budget  test",
    "   3.0 MiB    16.0 MiB  test_peaks.py::test_three",
    "   2.0 MiB        none  test_peaks.py::test_two",
]


def test_summary_lists_the_top_tests_by_peak(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(test_peaks=TESTS)
    result = inner.runpytest("--memory-summary", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [*TOP_TWO, "*= 4 passed in *"],
        consecutive=True,
    )


def test_summary_includes_failed_tests(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(
        test_fail="""
        import pytest

        @pytest.mark.memory_budget("1MiB")
        def test_hog():
            data = bytearray(8 * 1024 * 1024)
        """
    )
    result = inner.runpytest("--memory-summary", "5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= nea memory summary: top 5 tests by peak =*",
            "* MiB  test_fail.py::test_hog  TRIPPED *",
        ]
    )


def test_summary_peaks_reach_junitxml(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.memory_budget("4MiB")
        def test_one():
            data = bytearray(1024 * 1024)
        """
    )
    inner.runpytest("--junitxml=out.xml").assert_outcomes(passed=1)
    xml = (inner.path / "out.xml").read_text()
    assert '<property name="nea.memory_peak" value="' in xml
    assert '<property name="nea.memory_limit" value="4194304"' in xml


def test_no_summary_without_the_option(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_peaks=TESTS)
    result = inner.runpytest()
    result.assert_outcomes(passed=4)
    result.stdout.no_fnmatch_line("*nea memory summary*")


def test_summary_of_an_empty_run(inner: pytest.Pytester) -> None:
    inner.makepyfile("")
    result = inner.runpytest("--memory-summary", "3")
    result.stdout.fnmatch_lines(
        ["*= nea memory summary: top 3 tests by peak =*", "no test was measured"]
    )


def test_negative_summary_count_is_a_usage_error(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--memory-summary", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --memory-summary expects a number of tests >= 0, got -1"])


def test_summary_under_xdist(inner: pytest.Pytester) -> None:
    # The peaks travel from the workers to the controller in the reports' user_properties.
    pytest.importorskip("xdist")
    inner.makepyfile(test_peaks=TESTS)
    result = inner.runpytest_subprocess("-n", "2", "--memory-summary", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        TOP_TWO,
        consecutive=True,
    )
