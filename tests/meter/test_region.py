"""The preallocated region (csrc/region.c): where outermost budgets' blocks come from,
resets, escapes, the fallback to the block table, resizes across region and table."""

from __future__ import annotations

import contextvars
import ctypes
import gc
import random
import subprocess
import sys
import threading

import pytest

from nea import BudgetExceeded, budget
from nea.meter import _region

KiB = 1024
MiB = 1024 * KiB
PAGE = 16 * KiB  # the region's page (csrc/region.h)


def _in_region(obj: object) -> bool:
    info = _region.info()
    return info["base"] <= id(obj) < info["base"] + info["mapped"]


def _blocks() -> int:
    from nea import _meter

    return _meter.table_info()["blocks"]


def test_an_outermost_budget_allocates_from_the_region(native_region: str) -> None:
    with budget("16MiB") as b:
        obj = [object() for _ in range(100)]
        assert all(_in_region(o) for o in obj)
        assert b.live > 0
        del obj
    outside = [object()]
    assert not _in_region(outside[0])


def test_with_the_region_off_nothing_comes_from_it(native_table: str) -> None:
    with budget("16MiB"):
        obj = [object() for _ in range(100)]
        assert not any(_in_region(o) for o in obj)
        del obj


def test_a_slot_with_nothing_live_is_reset_at_once(native_region: str) -> None:
    from nea import _meter

    gc.collect()
    before = _region.info()
    with budget("16MiB") as b:
        held = [s for s in _meter.region_slots() if s["held"]]
        pinned = held[0]["pinned"] if len(held) == 1 else None
        del held
        data = [str(i) * 10 for i in range(10_000)]
        del data
        live = b.live
    after = _region.info()
    assert after["fast_resets"] + after["scan_resets"] == (
        before["fast_resets"] + before["scan_resets"] + 1
    )
    # (the slot just freed is reused despite a few pins that earlier tests left: those
    # need the scan)
    if live == 0 and pinned == 0:
        assert after["fast_resets"] == before["fast_resets"] + 1


_HANDED_OVER = """
import gc
import struct
from nea import budget
from nea.meter import _region

gc.disable()  # no collection may free an earlier block into the slot meanwhile
address = struct.Struct("Q")
where = bytearray(16)  # the addresses, written without keeping anything made in a budget
with budget("16MiB") as first:
    small, large = bytes(100), bytes(1000)  # two classes: two class pages
    address.pack_into(where, 0, id(large))
    del small, large
before = _region.info()
with budget("16MiB") as second:
    large = bytes(1000)
    address.pack_into(where, 8, id(large))
    del large
after = _region.info()
assert first.statistics().retained == 0 and second.statistics().retained == 0
assert after["fast_resets"] == before["fast_resets"] + 1, (before, after)
# The second budget took the block the first one freed, from the same class page: with
# the slot reset from page 0, the 1000-byte class would have carved page 0 instead.
assert where[:8] == where[8:], where.hex()
assert after["pages_carved"] == before["pages_carved"], (before, after)  # none carved
"""


def test_a_slot_left_empty_is_handed_over_as_it_is(native_region: str) -> None:
    # A holder that closes with nothing live leaves its class pages and free lists to the
    # next one. In a process of its own: earlier tests' blocks may pin pages of the slot.
    done = subprocess.run(
        [sys.executable, "-c", _HANDED_OVER], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_escaped_blocks_are_retained_and_freeing_them_credits_nobody(native_region: str) -> None:
    with budget("16MiB") as first:
        kept = [bytearray(100) for _ in range(50)]
    assert all(_in_region(k) for k in kept)
    retained = first.statistics().retained
    assert retained >= 50 * 100
    assert _region.info()["pinned_runs"] >= 1
    from nea import _meter

    assert any(s["pinned"] and not s["held"] for s in _meter.region_slots())
    stats = first.statistics()
    # The slot stays usable around the pinned pages, and a later free credits nobody.
    with budget("16MiB") as second:
        fresh = [bytearray(100) for _ in range(5_000)]
        assert all(_in_region(f) for f in fresh)
        live = second.live
        del kept  # 50 blocks of ~150 bytes: crediting them would show
        assert second.live >= live - 64
        del fresh
    assert first.statistics() == stats
    # Once the escaped blocks are gone, the next close finds nothing pinned.
    with budget("16MiB"):
        pass
    with budget("16MiB"):
        pass


def test_an_escaped_page_is_never_handed_out_again_while_pinned(native_region: str) -> None:
    with budget("16MiB"):
        kept = [bytes([i % 256]) * 200 for i in range(200)]
    for _ in range(3):
        with budget("16MiB"):
            churn = [bytes([7]) * 200 for _ in range(2_000)]
            del churn
    assert all(k == bytes([i % 256]) * 200 for i, k in enumerate(kept))


def _held_slot() -> int:
    from nea import _meter

    (index,) = (i for i, slot in enumerate(_meter.region_slots()) if slot["held"])
    return index


def test_the_slot_just_freed_is_reused_despite_a_few_escaped_blocks(native_region: str) -> None:
    # Its free pages are the warmest in the caches: a server's requests usually leave a
    # few blocks behind for a moment, and skipping the slot for them would give every
    # request of a burst a cold slot of its own.
    with budget("16MiB"):
        first = _held_slot()
        kept = [bytearray(100) for _ in range(20)]
    from nea import _meter

    assert _meter.region_slots()[first]["pinned"] >= 1
    with budget("16MiB"):
        assert _held_slot() == first
        fresh = [bytearray(100) for _ in range(1_000)]
        assert all(_in_region(f) for f in fresh)
        del fresh
    del kept


def _held_slots() -> set[int]:
    from nea import _meter

    return {i for i, slot in enumerate(_meter.region_slots()) if slot["held"]}


def test_a_slot_pinned_in_many_places_is_not_reused_first(native_region: str) -> None:
    other = budget("16MiB")  # outermost too: opened in a context of its own
    elsewhere = contextvars.Context()
    elsewhere.run(other.__enter__)
    (clean,) = _held_slots()
    with budget("16MiB"):
        (first,) = _held_slots() - {clean}
        elsewhere.run(other.__exit__, None, None, None)  # `clean` is free, nothing pinned
        kept = [bytearray(5_000) for _ in range(40)]  # 40 runs of a page each
    from nea import _meter

    assert _meter.region_slots()[first]["pinned"] >= 40
    with budget("16MiB"):  # `first` was freed last, but its 40 pins make a long reset
        assert _held_slot() != first
    del kept


_LOWEST_FREE_RUN = """
import ctypes
from nea import budget, _meter

def address(data):
    view = (ctypes.c_char * len(data)).from_buffer(data)
    return ctypes.addressof(view)

def held():
    (index,) = (i for i, slot in enumerate(_meter.region_slots()) if slot["held"])
    return index

with budget("16MiB"):
    first = held()
    runs = [bytearray(5_000) for _ in range(8)]  # one page each, one after the other
    kept = [runs[2], runs[6]]
    del runs
with budget("16MiB"):
    fresh = bytearray(5_000)  # first: every new class carves a page from the free runs
    assert held() == first
    assert address(fresh) < address(kept[0]), (address(fresh), address(kept[0]))
"""


def test_new_pages_come_from_the_lowest_free_run(native_region: str) -> None:
    # Free runs are handed out in address order: new pages, and the pins some of them
    # get, stay low in the slot rather than pushing its top further up. In a process of
    # its own: the slot's layout must not depend on earlier tests' pins.
    done = subprocess.run(
        [sys.executable, "-c", _LOWEST_FREE_RUN], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_nested_budget_uses_the_block_table(native_region: str) -> None:
    with budget("16MiB") as outer:
        blocks = _blocks()
        with budget("8MiB") as inner:
            obj = [object() for _ in range(100)]
            assert not any(_in_region(o) for o in obj)
            assert _blocks() > blocks
            assert inner.live > 0 and outer.live >= inner.live
        del obj
    assert outer.statistics().retained < 4 * KiB


def test_a_full_slot_falls_back_to_the_block_table_with_exact_accounting(
    native_region: str,
) -> None:
    slot = _region.info()["slot_bytes"]
    chunk = slot * 6 // 10
    before = _region.info()["fallbacks"]
    with budget(3 * slot) as b:
        first = bytearray(chunk)
        second = bytearray(chunk)  # does not fit in what is left of the slot
        assert _in_region(first) or _in_region(second) or True
        assert _region.info()["fallbacks"] > before
        assert 2 * chunk <= b.live < 2 * chunk + 64 * KiB
        del first
        assert chunk <= b.live < chunk + 64 * KiB
        del second
        assert b.live < 64 * KiB
    assert b.statistics().retained < 64 * KiB


def test_a_budget_larger_than_its_slot_trips_only_at_its_limit(native_region: str) -> None:
    slot = _region.info()["slot_bytes"]
    with pytest.raises(BudgetExceeded), budget(slot + slot // 2, ceiling=2 * slot) as b:
        keep = [bytearray(MiB) for _ in range(slot // MiB)]  # past the slot, below the limit
        assert not b.tripped
        with pytest.raises(MemoryError):
            keep.append(bytearray(slot))  # past the ceiling
        assert b.tripped
        keep.clear()
    assert b.statistics().refused == 1


def test_resizes_stay_exact_inside_the_owner(native_region: str) -> None:
    with budget("64MiB") as b:
        data = bytearray()
        for _ in range(300):
            data += b"x" * 1000  # grows across classes and into page runs
            assert len(data) <= b.live < len(data) + 512 * KiB
        assert data == b"x" * 300_000
        del data[1000:]
        assert b.live < 256 * KiB
        del data
        assert b.live < 64 * KiB


def _address(data: bytearray) -> int:
    """Where a bytearray's buffer is now (the export ends before it is resized again)."""
    view = (ctypes.c_char * len(data)).from_buffer(data)
    address = ctypes.addressof(view)
    del view
    return address


def _free_run_pages() -> int:
    from nea import _meter

    return sum(slot["free_run_pages"] for slot in _meter.region_slots() if slot["held"])


def test_a_moved_large_block_grows_in_place_in_its_room(native_region: str) -> None:
    with budget("64MiB") as b:
        data = bytearray(20_000)  # a page run at the top of the slot
        above = bytearray(20_000)  # another run above it: data cannot grow with the top
        data += bytes(20_000)  # moves, and its new run has room to grow
        moved = _address(data)
        info = _region.info()
        assert info["base"] <= moved < info["base"] + info["mapped"]
        data += bytes(30_000)
        assert _address(data) == moved
        assert 70_000 <= b.live - len(above) < 70_000 + 16 * KiB
        assert data == bytes(70_000)
        del data, above
        assert b.live < 16 * KiB


def _three_adjacent_runs() -> tuple[bytearray, bytearray, bytearray]:
    """Page runs of 2, 7 and 2 pages, one after the other in the slot. The slot may have
    free runs between pages pinned by earlier tests (the most recently freed slot is
    reused despite a few escaped blocks): one-page blocks fill those first, so the runs
    come from the top. A class page carved in between can still place them apart: try
    again (the earlier tries are freed and become free runs)."""
    filler = [bytearray(10_000) for _ in range(_free_run_pages())]
    for _ in range(16):
        runs = bytearray(20_000), bytearray(100_000), bytearray(20_000)
        first, second, third = (_address(run) for run in runs)
        if second == first + 2 * PAGE and third == second + 7 * PAGE:
            del filler
            return runs
    pytest.fail("could not place three page runs next to each other")


def test_a_large_block_grows_into_the_free_run_after_it(native_region: str) -> None:
    with budget("64MiB") as b:
        data, after, top = _three_adjacent_runs()  # top keeps after's run below the top
        start = _address(data)
        del after
        free_before = _free_run_pages()  # small blocks may carve pages from its tail
        assert free_before >= 2
        data += bytes(40_000)  # 60,000 and a little: four pages, two taken from the run
        assert _address(data) == start
        assert _free_run_pages() <= free_before - 2
        assert 60_000 <= b.live - len(top) < 60_000 + 64 * KiB
        del data[1_000:]  # shrunk to a class-sized block: moved out of the run
        del data, top
        assert b.live < 64 * KiB


def test_an_escaped_region_block_resized_outside_any_budget_moves_out(
    native_region: str,
) -> None:
    with budget("16MiB") as first:
        kept = bytearray(b"abc" * 1000)
    assert _in_region(kept)
    stats = first.statistics()
    kept += b"d" * 100_000  # realloc of a region block with no budget current
    assert kept[:3000] == b"abc" * 1000 and kept[3000:] == b"d" * 100_000
    assert first.statistics() == stats
    with budget("16MiB") as second:
        pass
    assert second.live == 0


def test_an_escaped_region_block_resized_in_another_budget_is_charged_in_full(
    native_region: str,
) -> None:
    with budget("16MiB"):
        kept = bytearray(10_000)
    with budget("16MiB") as second:
        kept += b"x" * 10_000
        assert 20_000 <= second.live < 20_000 + 16 * KiB
        del kept
        assert second.live < 16 * KiB


def test_a_region_block_resized_in_a_nested_budget_stays_its_owners(native_region: str) -> None:
    with budget("16MiB") as outer:
        data = bytearray(10_000)
        with budget("1MiB") as inner:
            data += b"y" * 100_000
            assert inner.live < 16 * KiB  # the block belongs to the outer budget
        assert outer.live >= 110_000
        del data
        assert outer.live < 16 * KiB


def test_a_region_block_freed_by_another_thread_uncharges_its_owner(native_region: str) -> None:
    with budget("16MiB") as b:
        box = [bytearray(200_000)]
        assert b.live >= 200_000
        thread = threading.Thread(target=box.clear)  # no budget in that thread's context
        thread.start()
        thread.join()
        assert b.live < 16 * KiB


def test_release_gives_back_the_pages_of_free_slots(native_region: str) -> None:
    with budget("16MiB"):
        data = bytearray(4 * MiB)
        del data
    gc.collect()
    _region.release()
    info = _region.info()
    assert info["pages_touched"] <= info["pages_carved"]


def test_a_disallowed_region_serves_nobody(native_region: str) -> None:
    from nea import _meter

    _meter.region_allow(False)
    try:
        before = _region.info()["served"]
        with budget("16MiB"):
            obj = [object()]
            assert not _in_region(obj[0])
        assert _region.info()["served"] == before
    finally:
        _meter.region_allow(True)


def test_random_large_resizes_keep_contents_and_accounting(native_region: str) -> None:
    # Large runs moving with room, growing into free runs after them and giving back
    # tails, interleaved with frees: contents survive and live follows the lengths.
    rng = random.Random(6)
    with budget("64MiB") as b:
        blocks: list[bytearray] = []
        for step in range(600):
            kind = rng.random()
            if kind < 0.3 or not blocks:
                blocks.append(bytearray([step % 251]) * rng.randrange(5_000, 60_000))
            elif kind < 0.6:
                i = rng.randrange(len(blocks))
                blocks[i].extend(bytes([blocks[i][0]]) * rng.randrange(1_000, 40_000))
            elif kind < 0.75:
                i = rng.randrange(len(blocks))
                del blocks[i][rng.randrange(4_097, len(blocks[i]) + 1) :]
            else:
                blocks.pop(rng.randrange(len(blocks)))
            total = sum(sys.getsizeof(block) for block in blocks)  # with over-allocation
            assert total <= b.live < total + 64 * KiB
        assert all(block == bytes([block[0]]) * len(block) for block in blocks)
        del blocks
        assert b.live < 64 * KiB
