"""The soft limit, the hard ceiling and safe-point delivery (native meter).

Crossing the limit never fails the allocation that crosses it; the budget trips and
``BudgetExceeded`` is raised in the budget's own code at its next safe point. Only past
the ceiling are allocations refused, and never the small blocks an unwind needs."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import anyio.to_thread
import pytest

from nea import BudgetExceeded, budget, current_budget

KiB = 1024
MiB = 1024 * KiB


def _ext():  # type: ignore[no-untyped-def]
    from nea import _meter

    return _meter


def _cross(size: int) -> bytearray:
    return bytearray(size)  # the crossing line


def test_the_crossing_allocation_succeeds_and_the_next_safe_point_raises(native: str) -> None:
    reached: list[str] = []
    with pytest.raises(BudgetExceeded) as info, budget("4MiB") as b:
        block = _cross(5 * MiB)  # within the ceiling (8 MiB): granted, trips
        reached.append("after the call")  # the safe point is the end of the call above
        del block
    assert reached == []
    assert b.tripped
    stats = b.statistics()
    assert stats.refused == 0
    assert stats.peak >= 5 * MiB
    line = _cross.__code__.co_firstlineno + 1
    assert stats.refused_at == f"{__file__}:{line} in _cross"
    assert info.value.requested >= 5 * MiB
    assert "an allocation of 5.0 MiB at" in str(info.value) and "4.0 MiB" in str(info.value)
    assert current_budget() is None  # the block was left: the exit was not interrupted


def test_past_the_ceiling_the_allocation_is_refused(native: str) -> None:
    with pytest.raises(BudgetExceeded) as info, budget("4MiB") as b:
        bytearray(64 * MiB)
    assert b.ceiling == 8 * MiB
    assert b.statistics().refused == 1
    assert b.peak < 4 * MiB
    assert isinstance(info.value.__cause__, MemoryError)
    assert "refused" in str(info.value) and "hard ceiling of 8.0 MiB" in str(info.value)


def test_the_ceiling_can_be_chosen(native: str) -> None:
    with pytest.raises(BudgetExceeded), budget("1MiB", ceiling="1MiB") as b:
        bytearray(2 * MiB)
    assert b.statistics().refused == 1
    with pytest.raises(ValueError, match="ceiling"):
        budget("2MiB", ceiling="1MiB")


def test_small_blocks_are_never_refused_past_the_ceiling(native: str) -> None:
    with pytest.raises(BudgetExceeded), budget("1MiB", ceiling="1MiB") as b:
        try:
            bytearray(2 * MiB)
        except MemoryError:
            # An unwind's allocations (ints, traceback entries) are small: granted.
            small = [str(i) * 20 for i in range(1000)]
            assert len(small) == 1000
    assert b.statistics().refused == 1


def test_a_swallowed_trip_is_delivered_again_once_the_budget_grows(native: str) -> None:
    caught = 0
    keep: list[bytearray] = []
    with pytest.raises(BudgetExceeded), budget("4MiB", ceiling="64MiB") as b:
        for _ in range(20):
            try:
                keep.append(bytearray(MiB))
            except BudgetExceeded:
                caught += 1
        keep.clear()
    redeliver = _ext().REDELIVER_BYTES
    assert caught >= 1
    assert caught <= 16 * MiB // redeliver + 1  # not at every allocation
    assert b.statistics().refused == 0


def test_a_trip_is_not_delivered_in_another_task(native: str) -> None:
    async def hog(started: asyncio.Event) -> str:
        try:
            async with budget("1MiB"):
                data = b"x" * (3 * MiB // 2)  # crosses inside one C call
                started.set()
                await asyncio.sleep(0)
                return f"not interrupted ({len(data)})"
        except BudgetExceeded:
            return "tripped"

    async def neighbour(started: asyncio.Event) -> str:
        await started.wait()
        async with budget("64MiB"):
            rows = [{"n": i, "s": str(i) * 10} for i in range(20000)]
            for _ in range(50):
                await asyncio.sleep(0)
                rows = [dict(row) for row in rows]
            return f"served {len(rows)}"

    async def main() -> list[str]:
        started = asyncio.Event()
        return list(await asyncio.gather(hog(started), neighbour(started)))

    assert asyncio.run(main()) == ["tripped", "served 20000"]


def test_a_trip_in_a_worker_thread_is_delivered_in_that_thread(native: str) -> None:
    progress: list[int] = []

    def grow() -> None:
        keep = []
        for i in range(200):  # 200 MiB if nothing stopped it
            keep.append(bytearray(MiB))
            progress.append(i)

    async def main() -> str:
        try:
            async with budget("8MiB", ceiling="512MiB"):
                await anyio.to_thread.run_sync(grow)
        except BudgetExceeded:
            return "tripped"
        return "ran to the end"

    async def ticking(work: asyncio.Task[str]) -> str:
        # The delivery to a thread is made by the main thread between two bytecodes.
        while not work.done():
            await asyncio.sleep(0.001)
        return await work

    async def run() -> str:
        return await ticking(asyncio.ensure_future(main()))

    assert asyncio.run(run()) == "tripped"
    assert len(progress) < 200


_PADDING = "".join(f"    pad[{i % 10}] = {i}\n" for i in range(120))  # offsets past 256
_LIVELOCK = f"""
import nea

def handler():
    keep = []
    pad = [0] * 10
{_PADDING}
    for round in range(200):
        try:
            keep.append(bytearray(256 * 1024))
        except MemoryError as e:
            try:
                keep.append(bytearray(64 * 1024))
            except MemoryError as e2:
                pass
    return len(keep)

try:
    with nea.budget("1MiB", ceiling="2MiB") as b:
        handler()
except MemoryError:
    pass
print("alive", b.tripped)
"""


def test_a_handler_that_swallows_and_keeps_allocating_never_livelocks(native: str) -> None:
    env_region = "off" if native == "table" else "on"
    done = subprocess.run(
        [sys.executable, "-c", _LIVELOCK],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NEA_REGION": env_region, "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alive True"


def test_request_budgets_borrow_from_the_shared_ceiling_plain_ones_do_not(native: str) -> None:
    from nea.meter import _door

    _door.share_ceiling(256 * MiB)  # a plan such as 64 slots × 4 MiB (only ever raised)
    request, enter, leave = _door.request_budget(MiB)
    handle = enter(MiB, request, None, True)
    _door.bind(request, handle)
    delivered = False
    try:
        try:
            block = bytearray(3 * MiB)  # past its own ceiling (2 MiB), within the plan
            del block
        finally:
            tripped = leave(handle)
    except BudgetExceeded:
        delivered = True
    assert tripped and delivered
    assert request.statistics().refused == 0 and request.peak >= 3 * MiB
    with pytest.raises(BudgetExceeded), budget("1MiB") as plain:
        bytearray(3 * MiB)
    assert plain.statistics().refused == 1
