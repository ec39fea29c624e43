"""Semantics only the native meter guarantees: refusal at the allocating line, exact
per-context charging, frees from any context, nesting, escapes, threads."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import importlib
import os
import sys
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from starlette.concurrency import run_in_threadpool

from nea import BudgetExceeded, budget, current_budget
from nea.meter import _select

KiB = 1024
MiB = 1024 * KiB
# Python objects around a payload (bytearray header, list slots, frames) stay far below this.
SLACK = 64 * KiB


def _meter_ext():  # type: ignore[no-untyped-def]
    from nea import _meter

    return _meter


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hog() -> bytearray:
    return bytearray(1 << 30)  # the refused line


def test_refusal_fails_before_memory_is_taken(native: str) -> None:
    rss_before = _rss_bytes()
    with pytest.raises(BudgetExceeded) as info, budget("16MiB") as b:
        _hog()
    assert _rss_bytes() - rss_before < 8 * MiB
    assert b.tripped
    stats = b.statistics()
    assert stats.refused == 1
    assert stats.refused_at is not None
    line = _hog.__code__.co_firstlineno + 1
    assert stats.refused_at == f"{__file__}:{line} in _hog"
    assert info.value.requested >= 1 << 30
    assert isinstance(info.value.__cause__, MemoryError)
    assert "1.0 GiB" in str(info.value) and "16.0 MiB" in str(info.value)


def test_leaving_a_full_budget_is_not_charged(native: str) -> None:
    with budget("1MiB") as b:
        pad = bytearray(b.limit - b.live - 200)
    assert not b.tripped
    del pad


@pytest.mark.asyncio
async def test_leaving_a_full_budget_with_async_with_is_not_charged(native: str) -> None:
    async with budget("1MiB") as b:
        pad = bytearray(b.limit - b.live - 200)
    assert not b.tripped
    del pad


def test_first_refusal_site_is_kept(native: str) -> None:
    with pytest.raises(BudgetExceeded), budget("1MiB") as b:
        for size in (2 * MiB, 3 * MiB):
            with contextlib.suppress(MemoryError):
                bytearray(size)
    assert b.statistics().refused == 2
    assert "in test_first_refusal_site_is_kept" in str(b.statistics().refused_at)


def test_frees_uncharge_from_any_context(native: str) -> None:
    holder: list[bytearray] = []
    with budget("64MiB") as b:
        holder.append(bytearray(8 * MiB))
        assert b.live >= 8 * MiB
        # free it in a context without a budget
        contextvars.Context().run(holder.clear)
        assert b.live < SLACK


def test_realloc_charges_the_difference(native: str) -> None:
    with budget("64MiB") as b:
        data = bytearray(1 * MiB)
        before = b.live
        data.extend(bytes(3 * MiB))
        assert 3 * MiB - SLACK < b.live - before < 3 * MiB + SLACK
        del data[512 * KiB :]
        assert b.live - before < -512 * KiB + SLACK
        del data
        assert b.live < SLACK


def test_growing_a_block_made_outside_charges_the_budget(native: str) -> None:
    data = bytearray(1 * MiB)
    with budget("64MiB") as b:
        data.extend(bytes(1 * MiB))
        assert b.live >= 2 * MiB
    del data


def test_nested_budgets_charge_every_enclosing_one(native: str) -> None:
    with budget("64MiB") as outer:
        a = bytearray(2 * MiB)
        with budget("64MiB") as inner:
            b = bytearray(3 * MiB)
            assert inner.live >= 3 * MiB
            assert outer.live >= 5 * MiB
            del b
            assert inner.live < SLACK
        assert outer.live < 2 * MiB + SLACK
        del a


def test_nested_refusal_trips_the_budget_that_would_exceed(native: str) -> None:
    with (
        pytest.raises(BudgetExceeded) as info,
        budget("2MiB") as outer,
        budget("64MiB") as inner,
    ):
        bytearray(4 * MiB)
    assert outer.tripped and not inner.tripped
    assert info.value.limit == 2 * MiB
    # the inner budget let the MemoryError pass unchanged
    assert type(info.value.__cause__) is MemoryError


def test_escaped_blocks_are_retained_and_never_credit_anyone(native: str) -> None:
    with budget("64MiB") as first:
        escaped = bytearray(4 * MiB)
    stats = first.statistics()
    assert stats.retained >= 4 * MiB
    with budget("64MiB") as second:
        live_before = second.live
        del escaped
        assert second.live == live_before
    assert first.statistics() == stats


def test_inner_escapes_stay_charged_to_the_enclosing_budget(native: str) -> None:
    with budget("64MiB") as outer:
        with budget("64MiB") as inner:
            kept = bytearray(4 * MiB)
        assert inner.statistics().retained >= 4 * MiB
        assert outer.live >= 4 * MiB
        del kept
        assert outer.live < SLACK
    info = _meter_ext().table_info()
    assert info["open"] == 0 and info["forwarding"] == 0


@pytest.mark.asyncio
async def test_an_enclosing_budget_may_close_first(native: str) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def child() -> int:
        async with budget("64MiB") as inner:
            entered.set()
            await release.wait()
            data = bytearray(2 * MiB)
            live = inner.live
            del data
            return live

    async with budget("64MiB"):
        task = asyncio.create_task(child())
        await entered.wait()
    release.set()
    assert await task >= 2 * MiB
    assert _meter_ext().table_info()["open"] == 0


@pytest.mark.asyncio
async def test_concurrent_tasks_are_charged_their_own_bytes(native: str) -> None:
    turns = [asyncio.Event() for _ in range(8)]

    async def worker(first_turn: int, chunk: int) -> tuple[int, int]:
        async with budget("256MiB") as b:
            kept = []
            for turn in range(first_turn, 8, 2):
                await turns[turn].wait()
                kept.append(bytearray(chunk))
                if turn + 1 < 8:
                    turns[turn + 1].set()
            return b.live, b.peak

    turns[0].set()
    a, b = await asyncio.gather(worker(0, 1 * MiB), worker(1, 3 * MiB))
    assert 4 * MiB <= a[0] < 4 * MiB + SLACK
    assert 12 * MiB <= b[0] < 12 * MiB + SLACK


@pytest.mark.asyncio
async def test_threads_with_copied_context_are_charged(native: str) -> None:
    def work() -> bytearray:
        return bytearray(2 * MiB)

    async with budget("64MiB") as b:
        kept = [
            await anyio.to_thread.run_sync(work),
            await run_in_threadpool(work),
            await asyncio.to_thread(work),
        ]
        assert 6 * MiB <= b.live < 6 * MiB + SLACK
        del kept


def test_raw_threads_are_not_charged(native: str) -> None:
    result: list[bytearray] = []
    with budget("64MiB") as b:
        before = b.live
        thread = threading.Thread(target=lambda: result.append(bytearray(4 * MiB)))
        thread.start()
        thread.join()
        assert b.live - before < SLACK


def test_set_and_restore_in_a_fresh_context_with_other_vars(native: str) -> None:
    others = [contextvars.ContextVar(f"other{i}", default=0) for i in range(5)]

    def scenario() -> tuple[object, int]:
        for i, var in enumerate(others):
            var.set(i)
        with budget("64MiB"):
            others[0].set(99)
        after = current_budget()
        with budget("64MiB") as probe:
            junk = bytearray(1 * MiB)
            inner_live = probe.live
        del junk
        return after, inner_live

    after, inner_live = contextvars.Context().run(scenario)
    assert after is None
    assert inner_live >= 1 * MiB
    assert _no_open_budget(_meter_ext().current.get())


def test_a_context_found_without_a_budget_is_charged_once_one_is_entered(native: str) -> None:
    # The meter keeps a context in which it found no budget (twice in a row) and then
    # skips the contextvar lookup there: entering a budget in that very context must
    # still be charged, and leaving it must stop the charging again.
    quiet = contextvars.Context()

    def allocate() -> bytearray:
        return bytearray(1 * MiB)

    with budget("64MiB") as elsewhere:  # an open budget: lookups happen at all
        before = elsewhere.live
        kept = [quiet.run(allocate) for _ in range(4)]
        assert elsewhere.live - before < SLACK

        def scenario() -> int:
            with budget("64MiB") as inner:
                contextvars.Context().run(allocate)  # back in `quiet`: a lookup again
                data = allocate()
                live = inner.live
            del data
            kept.append(allocate())  # after leaving: charged to nobody
            return live

        assert quiet.run(scenario) >= 1 * MiB
        kept.append(quiet.run(allocate))
        assert elsewhere.live - before < SLACK


def _no_open_budget(value: object) -> bool:
    """After an outermost budget, the var holds None or that budget's closed handle."""
    return value is None or bool(getattr(value, "closed", False))


def test_leaving_an_outermost_budget_leaves_no_budget_current(native: str) -> None:
    def scenario() -> tuple[object, object]:
        with budget("64MiB"):
            pass
        return _meter_ext().current.get(), current_budget()

    value, after = contextvars.Context().run(scenario)
    assert _no_open_budget(value)
    assert after is None


def test_leaving_a_nested_budget_makes_the_enclosing_one_current_again(native: str) -> None:
    with budget("64MiB") as outer:
        with budget("32MiB"):
            pass
        assert current_budget() is outer
        before = outer.live
        data = bytearray(1 * MiB)
        assert outer.live - before >= 1 * MiB
        del data


def test_module_imports_are_not_charged(native: str, tmp_path: Path) -> None:
    (tmp_path / "nea_heavy_module.py").write_text("DATA = bytearray(4 * 1024 * 1024)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with budget("1MiB") as b:
            module = importlib.import_module("nea_heavy_module")
        assert len(module.DATA) == 4 * MiB
        assert not b.tripped
        assert b.peak < 512 * KiB
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("nea_heavy_module", None)


def test_allocations_are_counted(native: str) -> None:
    with budget("64MiB") as b:
        items = [str(i) for i in range(1000)]
    assert b.statistics().allocations >= 1000
    del items


def test_an_abandoned_budget_releases_its_slot(native: str) -> None:
    ext = _meter_ext()
    open_before = ext.table_info()["open"]
    handle = ext.open(1024, None)
    assert ext.table_info()["open"] == open_before + 1
    del handle
    gc.collect()
    assert ext.table_info()["open"] == open_before


def test_slots_are_reused(native: str) -> None:
    for _ in range(1000):
        with budget("1MiB"):
            pass
    assert _meter_ext().table_info()["slots"] < 64


def test_hooks_come_back_after_tracemalloc_restores_older_ones(native: str) -> None:
    import tracemalloc

    ext = _meter_ext()
    with budget("1MiB"):
        pass
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing")
    tracemalloc.start()
    tracemalloc.stop()  # restores the allocators tracemalloc found: ours
    assert ext.installed()
    meter = _select.get_meter("native")
    assert meter.name == "native"


@pytest.mark.asyncio
async def test_a_task_past_its_grace_allowance_still_finishes(native: str) -> None:
    # The loop's own allocations for the task (scheduling its next step) are charged but
    # never refused: refusing them would raise inside the loop and leave the task pending.
    async def victim() -> None:
        async with budget("1MiB"):
            keep: list[bytearray] = []
            for _ in range(2):  # exhaust the limit, then the grace allowance
                with contextlib.suppress(MemoryError):
                    while True:
                        keep.append(bytearray(1000))
            for _ in range(20):
                await asyncio.sleep(0)
            keep.clear()

    task = asyncio.create_task(victim())
    done, _ = await asyncio.wait([task], timeout=10)  # a hang is the failure detected here
    assert task in done
    with pytest.raises(BudgetExceeded):
        task.result()


def test_register_loop_frame_rejects_non_functions(native: str) -> None:
    from nea.meter._loop import dispatch_codes, register_loop_frame

    with pytest.raises(TypeError, match="Python function"):
        register_loop_frame(len)
    assert asyncio.events.Handle._run.__code__ in dispatch_codes()


def test_the_block_table_shrinks_after_a_spike(native_table: str) -> None:
    ext = _meter_ext()
    with budget("256MiB"):
        spike = [object() for _ in range(200_000)]
        assert ext.table_info()["capacity"] >= 400_000
        del spike
    assert ext.table_info()["capacity"] <= 65536


@pytest.mark.asyncio
async def test_a_refusal_in_a_worker_thread_trips_the_budget(native: str) -> None:
    def hog() -> bytearray:
        return bytearray(64 * MiB)

    with pytest.raises(BudgetExceeded) as info:
        async with budget("8MiB") as b:
            await anyio.to_thread.run_sync(hog)
    assert b.tripped
    assert str(b.statistics().refused_at).endswith("in hog")
    assert isinstance(info.value.__cause__, MemoryError)


def test_a_refusal_survives_the_gc_opening_budgets_meanwhile(native: str) -> None:
    # The refusal path materialises frames, which can run the GC and its callbacks; those
    # may open budgets and move the meter's slot array. (Run under `make asan` too.)
    ext = _meter_ext()
    handles: list[object] = []

    def open_many(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and len(handles) < 2000:
            handles.extend(ext.open(1024, None) for _ in range(200))

    def allocate() -> bytearray:
        return bytearray(8 * MiB)

    threshold = gc.get_threshold()
    gc.callbacks.append(open_many)
    gc.set_threshold(1)
    try:
        with pytest.raises(BudgetExceeded), budget("1MiB") as b:
            allocate()
        opened = len(handles)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(open_many)
        handles.clear()
    assert opened > 0  # the GC did run inside the block
    assert b.tripped
    assert str(b.statistics().refused_at).endswith("in allocate")


def test_dense_small_objects_do_not_cluster_the_block_table(native_table: str) -> None:
    # pymalloc packs 16-byte objects densely; the locality-preserving hash must keep
    # linear probing's clusters short anyway.
    ext = _meter_ext()
    with budget("1GiB"):
        dense = [object() for _ in range(200_000)]
        mixed = [(object(), str(i), [i], b"x" * (i % 300)) for i in range(50_000)]
        info = ext.table_info()
        del dense, mixed
    assert info["blocks"] > 250_000
    assert info["displacement_total"] / info["blocks"] < 2
    assert info["displacement_max"] < 512


def test_handle_getters_read_the_slot_and_keep_the_final_numbers(native: str) -> None:
    ext = _meter_ext()
    owner = object()
    before = ext.current.get()
    handle = ext.enter(64 * 1024, owner)
    try:
        current, handle_owner = ext.current.get(), handle.owner
        data = bytearray(16 * 1024)
        numbers = (handle.limit, handle.tripped, handle.closed, handle.live, handle.peak)
        with contextlib.suppress(MemoryError):
            bytearray(1024 * 1024)
        tripped = handle.tripped
        open_limit = ext.snapshot(handle)[0]
    finally:
        exit_tripped = ext.exit(handle)
    assert current is handle and handle_owner is owner
    assert numbers[:3] == (64 * 1024, False, False)
    assert numbers[3] >= 16 * 1024 and numbers[4] >= numbers[3]
    assert tripped is True and exit_tripped is True
    after = ext.current.get()
    assert after is before or (_no_open_budget(before) and after is handle)
    # Closed: the final numbers stay readable, the owner is dropped (no reference cycle).
    assert handle.closed and handle.owner is None and handle.tripped is True
    final = ext.snapshot(handle)
    assert final[:3] == (open_limit, handle.live, handle.peak)
    assert final[5] == handle.live >= 16 * 1024  # retained: `data` is still alive
    assert final[7] > 1024 * 1024 - 64  # the refused size
    assert final[8] is not None and "test_native.py" in final[8]
    with pytest.raises(ValueError, match="already closed"):
        ext.exit(handle)
    del data


def test_exit_needs_a_handle_made_by_enter(native: str) -> None:
    ext = _meter_ext()
    handle = ext.open(1024, None)
    with pytest.raises(ValueError, match="made by enter"):
        ext.exit(handle)
    ext.close(handle)


def test_a_budget_entered_while_tracemalloc_traces_above_the_hooks_is_charged(
    native: str,
) -> None:
    # tracemalloc started after the hooks calls them; installing them again on top of it
    # would make the two call each other forever. Run in a child so a regression hangs
    # only the child (bounded by the timeout), not the suite.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import tracemalloc, nea
        with nea.budget("16MiB"):
            pass
        tracemalloc.start()
        with nea.budget("16MiB") as b:
            data = bytearray(100_000)
            del data
        tracemalloc.stop()
        with nea.budget("16MiB") as c:
            data = bytearray(100_000)
            del data
        print(b.peak >= 100_000, c.peak >= 100_000)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
