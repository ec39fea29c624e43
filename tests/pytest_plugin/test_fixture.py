"""The ``memory_budget`` fixture: budgets a test opens itself and inspects afterwards."""

from __future__ import annotations

import pytest


def test_fixture_measures_a_block(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        MiB = 1024 * 1024

        def test_block(memory_budget):
            with memory_budget("8MiB") as b:
                assert nea.current_budget() is b
                data = bytearray(2 * MiB)
                del data
            assert nea.current_budget() is None
            assert b.limit == 8 * MiB
            assert 2 * MiB <= b.peak < 3 * MiB
            assert b.live < MiB
            assert not b.tripped
            assert b.statistics().peak == b.peak

        @pytest.mark.asyncio
        async def test_async_block(memory_budget):
            async with memory_budget(4 * MiB) as b:
                data = bytearray(MiB)
                del data
            assert MiB <= b.peak < 2 * MiB
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_fixture_budget_exceeded_raises_budget_exceeded(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        def test_hog_caught(memory_budget):
            with pytest.raises(nea.BudgetExceeded) as info:
                with memory_budget("1MiB") as b:
                    bytearray(8 * 1024 * 1024)
            assert b.tripped
            assert info.value.limit == 1024 * 1024

        def test_hog_uncaught(memory_budget):
            with memory_budget("1MiB"):
                bytearray(8 * 1024 * 1024)
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    # Not the marker's clean failure: the test's own budget raised, with its traceback.
    result.stdout.fnmatch_lines(["E   *BudgetExceeded: memory budget of 1.0 MiB exceeded*"])
    result.stdout.no_fnmatch_line("nea: the test exceeded its memory budget*")


def test_fixture_nests_inside_the_marker_budget(inner: pytest.Pytester, meter: str) -> None:
    inner.makepyfile(
        """
        import pytest
        import nea

        @pytest.mark.memory_budget("16MiB")
        def test_nested(memory_budget):
            outer = nea.current_budget()
            with memory_budget("8MiB") as inner:
                data = bytearray(1024 * 1024)
                del data
            assert nea.current_budget() is outer
            assert outer.peak >= inner.peak >= 1024 * 1024
        """
    )
    inner.runpytest().assert_outcomes(passed=1)
