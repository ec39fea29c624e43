"""The ``memory_budget`` marker on sync tests, anyio tests and pytest-asyncio tests."""

from __future__ import annotations

import pytest

from nea.pytest_plugin import MARKER

ADVICE = "raise the budget or make this code use less memory"


def exceeded_lines(meter: str, site: str, source: str = "@pytest.mark.memory_budget") -> list[str]:
    """The exact failure text of a test whose 1 MiB budget an 8 MiB bytearray exceeded.

    Only ``live`` (and, natively, ``peak``) are wildcards: they include the interpreter's
    own small allocations. ``site`` is ``file.py:line in function``.
    """
    first = f"nea: the test exceeded its memory budget (set by {source})"
    if meter == "native":
        second = (
            f"memory budget of 1.0 MiB exceeded: an allocation of 8.0 MiB at *{site} "
            f"crossed it; 1 allocation past its hard ceiling of 2.0 MiB refused; "
            f"live *, peak *; {ADVICE}"
        )
    else:
        second = (
            "memory budget of 1.0 MiB exceeded: live *, peak 8.0 MiB "
            f"(measured on exit, no allocation was refused); {ADVICE}"
        )
    return [first, second]


SYNC_TESTS = """
import pytest
import nea

@pytest.mark.memory_budget("1MiB")
def test_small():
    budget = nea.current_budget()
    assert budget is not None and budget.limit == 1024 * 1024
    data = bytearray(1000)
    assert len(data) == 1000

@pytest.mark.memory_budget("1MiB")
def test_hog():
    data = bytearray(8 * 1024 * 1024)
    assert len(data) > 0
"""


def test_marker_is_registered(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--markers")
    result.stdout.fnmatch_lines([f"@pytest.mark.{MARKER}(limit): run the test body inside*"])


def test_sync_test_runs_inside_its_budget_and_fails_when_exceeding_it(
    inner: pytest.Pytester, meter: str
) -> None:
    inner.makepyfile(test_sync=SYNC_TESTS)
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_hog _*", *exceeded_lines(meter, "test_sync.py:13 in test_hog")],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(["FAILED test_sync.py::test_hog - Failed: nea: the test exceeded*"])


def test_test_without_budget_is_not_metered(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import nea

        def test_free():
            assert nea.current_budget() is None
            data = bytearray(8 * 1024 * 1024)
            assert len(data) > 0
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


def test_swallowed_memory_error_still_fails_the_test(inner: pytest.Pytester, native: str) -> None:
    inner.makepyfile(
        test_swallow="""
        import pytest

        @pytest.mark.memory_budget("1MiB")
        def test_swallow():
            try:
                bytearray(8 * 1024 * 1024)
            except MemoryError:
                pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(exceeded_lines(native, "test_swallow.py:6 in test_swallow"))


def test_other_failures_of_a_budgeted_test_are_reported_unchanged(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.memory_budget("16MiB")
        def test_wrong():
            assert 1 + 1 == 3
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E       assert (1 + 1) == 3"])
    result.stdout.no_fnmatch_line("*memory budget*")


def test_methods_and_parametrized_tests_run_inside_their_budget(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        class TestThings:
            @pytest.mark.memory_budget("2MiB")
            def test_method(self):
                assert nea.current_budget().limit == 2 * 1024 * 1024

        @pytest.mark.memory_budget("3MiB")
        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n):
            assert nea.current_budget().limit == 3 * 1024 * 1024
        """
    )
    inner.runpytest().assert_outcomes(passed=3)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('"lots"', "cannot parse size 'lots'; accepted: *"),
        ("", "@pytest.mark.memory_budget takes exactly one limit, e.g. *; got args=() kwargs={}"),
        (
            '"1MiB", "2MiB"',
            "@pytest.mark.memory_budget takes exactly one limit, e.g. *"
            "; got args=('1MiB', '2MiB') kwargs={}",
        ),
    ],
)
def test_malformed_marker_is_an_error_of_that_test_only(
    inner: pytest.Pytester, marker: str, message: str
) -> None:
    inner.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.memory_budget({marker})
        def test_bad():
            pass

        def test_fine():
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"test_bad.py::test_bad: {message}"])


def test_marker_accepts_limit_keyword_and_bytes(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        @pytest.mark.memory_budget(limit=4096 * 1024)
        def test_kw():
            assert nea.current_budget().limit == 4 * 1024 * 1024
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


ANYIO_TESTS = """
import pytest
import nea

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.fixture
async def early():
    # An async fixture makes anyio start its runner task before the test body runs.
    yield nea.current_budget()

@pytest.mark.anyio
@pytest.mark.memory_budget("1MiB")
async def test_current(early):
    assert early is None
    budget = nea.current_budget()
    assert budget is not None and budget.limit == 1024 * 1024

@pytest.mark.anyio
@pytest.mark.memory_budget("1MiB")
async def test_hog():
    data = bytearray(8 * 1024 * 1024)
    assert len(data) > 0

@pytest.mark.anyio
async def test_unbudgeted_after_budgeted():
    assert nea.current_budget() is None
"""


def test_anyio_test_body_runs_inside_its_budget(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(test_anyio=ANYIO_TESTS)
    result = inner.runpytest("-p", "anyio")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_hog _*", *exceeded_lines(meter, "test_anyio.py:23 in test_hog")],
        consecutive=True,
    )


ASYNCIO_TESTS = """
import pytest
import pytest_asyncio
import nea

@pytest_asyncio.fixture
async def early():
    yield nea.current_budget()

@pytest.mark.asyncio
@pytest.mark.memory_budget("1MiB")
async def test_current(early):
    assert early is None
    budget = nea.current_budget()
    assert budget is not None and budget.limit == 1024 * 1024

@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.memory_budget("2MiB")
async def test_current_in_module_loop():
    assert nea.current_budget().limit == 2 * 1024 * 1024

@pytest.mark.asyncio
@pytest.mark.memory_budget("1MiB")
async def test_hog():
    data = bytearray(8 * 1024 * 1024)
    assert len(data) > 0
"""


def test_pytest_asyncio_test_body_runs_inside_its_budget(
    inner: pytest.Pytester, meter: str
) -> None:
    inner.makepyfile(test_aio=ASYNCIO_TESTS)
    result = inner.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_hog _*", *exceeded_lines(meter, "test_aio.py:24 in test_hog")],
        consecutive=True,
    )


def test_other_failure_after_a_trip_notes_the_trip(inner: pytest.Pytester, native: str) -> None:
    inner.makepyfile(
        test_after="""
        import pytest

        @pytest.mark.memory_budget("1MiB")
        def test_after():
            try:
                bytearray(8 * 1024 * 1024)
            except MemoryError:
                raise ValueError("gave up")
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E           ValueError: gave up",
            "*- Captured nea memory budget call -*",
            "the test's memory budget of 1.0 MiB (set by @pytest.mark.memory_budget) tripped "
            "before this failure: first refusal at *test_after.py:6 in test_after",
        ]
    )


def test_module_marker_applies_and_function_marker_wins(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        pytestmark = pytest.mark.memory_budget("2MiB")

        def test_module():
            assert nea.current_budget().limit == 2 * 1024 * 1024

        @pytest.mark.memory_budget("3MiB")
        def test_function():
            assert nea.current_budget().limit == 3 * 1024 * 1024
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_unittest_test_case_runs_inside_its_budget(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(
        test_unit="""
        import unittest
        import pytest
        import nea

        class TestUnit(unittest.TestCase):
            @pytest.mark.memory_budget("2MiB")
            def test_current(self):
                self.assertEqual(nea.current_budget().limit, 2 * 1024 * 1024)

            @pytest.mark.memory_budget("1MiB")
            def test_hog(self):
                data = bytearray(8 * 1024 * 1024)
                self.assertTrue(data is not None)
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_unit.py::TestUnit::test_hog - *"])


def test_pytest_asyncio_auto_mode(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        @pytest.mark.memory_budget("2MiB")
        async def test_auto():
            assert nea.current_budget().limit == 2 * 1024 * 1024

        class TestMethods:
            @pytest.mark.memory_budget("3MiB")
            async def test_method(self):
                assert nea.current_budget().limit == 3 * 1024 * 1024
        """
    )
    inner.runpytest("-o", "asyncio_mode=auto").assert_outcomes(passed=2)
