"""The public budget API, run against both meters (``meter`` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import sys

import anyio
import anyio.to_thread
import pytest
from starlette.concurrency import run_in_threadpool

import nea
from nea import Budget, BudgetExceeded, BudgetStatistics, budget, current_budget
from nea.meter import _select

MiB = 1024 * 1024


def test_budget_parses_its_limit(meter: str) -> None:
    assert budget(1024).limit == 1024
    assert budget("16MiB").limit == 16 * MiB
    assert budget("100kB").limit == 100_000
    with pytest.raises(ValueError, match="KiB/MiB/GiB"):
        budget("lots")


def test_backend_names_the_meter_in_use(meter: str) -> None:
    assert nea.meter.backend() == meter


def test_with_makes_the_budget_current_and_restores(meter: str) -> None:
    assert current_budget() is None
    with budget("16MiB") as b:
        assert isinstance(b, Budget)
        assert current_budget() is b
    assert current_budget() is None


@pytest.mark.asyncio
async def test_async_with_makes_the_budget_current(meter: str) -> None:
    async with budget("16MiB") as b:
        assert current_budget() is b
        await asyncio.sleep(0)
        assert current_budget() is b
    assert current_budget() is None


def test_nested_budgets_restore_the_enclosing_one(meter: str) -> None:
    with budget("16MiB") as outer:
        with budget("8MiB") as inner:
            assert current_budget() is inner
        assert current_budget() is outer
    assert current_budget() is None


def test_live_and_peak_follow_a_block(meter: str) -> None:
    with budget("64MiB") as b:
        data = bytearray(4 * MiB)
        assert b.live >= 4 * MiB
        del data
        assert b.live < 1 * MiB
        assert b.peak >= 4 * MiB
        assert not b.tripped
    assert b.peak >= 4 * MiB


def test_statistics_are_frozen_and_complete(meter: str) -> None:
    with budget("64MiB") as b:
        kept = bytearray(2 * MiB)
    stats = b.statistics()
    assert isinstance(stats, BudgetStatistics)
    assert stats.limit == 64 * MiB
    assert stats.peak >= 2 * MiB
    assert stats.retained >= 2 * MiB
    assert stats.refused == 0
    assert stats.refused_at is None
    assert [f.name for f in dataclasses.fields(stats)] == [
        "limit",
        "live",
        "peak",
        "allocations",
        "refused",
        "retained",
        "refused_at",
        "ceiling",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.live = 0  # type: ignore[misc]
    del kept


def test_a_budget_is_entered_once(meter: str) -> None:
    b = budget("1MiB")
    with b:
        pass
    with pytest.raises(RuntimeError, match="already entered"), b:
        pass


def test_budget_before_entering_reports_zero(meter: str) -> None:
    b = budget("1MiB")
    assert (b.live, b.peak, b.tripped) == (0, 0, False)


def test_exceeding_the_limit_raises_budget_exceeded_on_exit(meter: str) -> None:
    with pytest.raises(BudgetExceeded) as info, budget("1MiB") as b:
        data = bytearray(8 * MiB)
        del data
    assert b.tripped
    assert isinstance(info.value, MemoryError)
    assert info.value.limit == 1 * MiB
    assert "1.0 MiB" in str(info.value)
    if meter == "native":
        assert isinstance(info.value.__cause__, MemoryError)
        assert info.value.requested >= 8 * MiB
        assert "8.0 MiB" in str(info.value)
        assert "test_api.py:" in str(info.value)
        assert "in test_exceeding_the_limit_raises_budget_exceeded_on_exit" in str(info.value)


def test_a_swallowed_memory_error_is_raised_on_exit(meter: str) -> None:
    with pytest.raises(BudgetExceeded), budget("1MiB"):
        try:
            data = bytearray(8 * MiB)
            del data
        except MemoryError:
            pass


def test_other_exceptions_propagate_unchanged(meter: str) -> None:
    with pytest.raises(KeyError), budget("1MiB"):
        try:
            data = bytearray(8 * MiB)
            del data
        except MemoryError:
            pass
        raise KeyError("app bug")


def test_budget_exceeded_pickles(meter: str) -> None:
    with pytest.raises(BudgetExceeded) as info, budget("1MiB"):
        data = bytearray(8 * MiB)
        del data
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)
    assert again.statistics == info.value.statistics


@pytest.mark.asyncio
async def test_tasks_created_inside_share_the_budget(meter: str) -> None:
    async def child() -> Budget | None:
        await asyncio.sleep(0)
        return current_budget()

    async with budget("16MiB") as b:
        assert await asyncio.create_task(child()) is b
        async with anyio.create_task_group() as tg:
            seen: list[Budget | None] = []

            async def record() -> None:
                seen.append(current_budget())

            tg.start_soon(record)
        assert seen == [b]


@pytest.mark.asyncio
async def test_a_task_that_outlives_an_inner_budget_is_charged_to_the_outer_one(
    meter: str,
) -> None:
    async def straggler(go: asyncio.Event) -> tuple[object, int]:
        await go.wait()
        data = bytearray(3 * MiB)
        return current_budget(), len(data)

    go = asyncio.Event()
    with budget("64MiB") as outer:
        with budget("8MiB") as inner:
            task = asyncio.create_task(straggler(go))
            await asyncio.sleep(0)
        base = outer.live
        go.set()
        charged_to, size = await task
        assert charged_to is outer
        assert outer.peak >= base + size - 64 * 1024
    assert inner.peak < MiB  # the inner budget never saw the block
    with budget("1MiB"):  # once the outer one is closed too: nobody
        pass
    assert current_budget() is None


@pytest.mark.asyncio
async def test_threads_with_copied_context_share_the_budget(meter: str) -> None:
    async with budget("16MiB") as b:
        assert await anyio.to_thread.run_sync(current_budget) is b
        assert await run_in_threadpool(current_budget) is b
        assert await asyncio.to_thread(current_budget) is b


def test_unknown_meter_name_is_a_config_error(meter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEA_METER", "magic")
    with pytest.raises(nea.ConfigError, match="NEA_METER='magic'"):
        _select._choose()


def test_meter_env_selects_tracemalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEA_METER", "tracemalloc")
    assert _select._choose().name == "tracemalloc"


def test_public_names_are_exported() -> None:
    for name in ("budget", "Budget", "BudgetStatistics", "BudgetExceeded", "current_budget"):
        assert name in nea.__all__
    assert nea.meter.backend() in ("native", "tracemalloc")
    assert "nea.meter" in sys.modules


def test_without_the_extension_the_fallback_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import nea as package

    monkeypatch.setitem(sys.modules, "nea._meter", None)  # type: ignore[arg-type]
    if hasattr(package, "_meter"):
        monkeypatch.delattr(package, "_meter")
    monkeypatch.delenv("NEA_METER", raising=False)
    assert not _select.native_available()
    assert _select._choose().name == "tracemalloc"
    monkeypatch.setenv("NEA_METER", "native")
    monkeypatch.setattr(_select, "_meters", {})
    with pytest.raises(nea.ConfigError, match="not built"):
        _select._choose()
