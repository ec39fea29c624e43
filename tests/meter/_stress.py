"""A randomized stress of the meter, shared by the normal suite and ``make asan``.

Tasks run random nested budgets and, inside them, random allocations, frees, reallocs
(bytearray resize), ``asyncio.to_thread`` calls and hand-offs of blocks to plain threads
that free or resize them. Budgets close while their blocks are alive (blocks escape into a
shared pool and into tasks that outlive the budget). Every budget's accounting is checked
when it closes; the meter's tables are checked at the end.

Run directly: ``python -m tests.meter._stress [seed] [rounds]``.
"""

from __future__ import annotations

import asyncio
import queue
import random
import sys
import threading
from dataclasses import dataclass, field

from nea import Budget, budget

KiB = 1024
# Keep ordinary operations this far from a limit, so that only deliberate "hog"
# allocations trip a budget and never the event loop's own small allocations.
HEADROOM = 16 * KiB


@dataclass
class Report:
    budgets: int = 0
    tripped: int = 0
    refusals: int = 0
    ops: int = 0
    errors: list[str] = field(default_factory=list)


def _check(b: Budget, report: Report, grace: int) -> None:
    s = b.statistics()
    report.budgets += 1
    report.refusals += s.refused
    if b.tripped:
        report.tripped += 1
    # Past the limit only once tripped; past the ceiling only by blocks that are always
    # granted (the small ones an unwind needs), which `grace` bounds here.
    ceiling = (s.ceiling + grace) if b.tripped else s.limit
    if not (0 <= s.live <= s.peak <= ceiling):
        report.errors.append(f"bad accounting {s}")
    if s.refused > 0 and not b.tripped:
        report.errors.append(f"refused without a trip {s}")
    if b.tripped and s.refused_at is None:
        report.errors.append(f"tripped without a site {s}")


class _Worker:
    def __init__(
        self,
        seed: int,
        pool: list[bytearray],
        handoff: queue.Queue[object],
        report: Report,
        grace: int,
    ) -> None:
        self.rng = random.Random(seed)
        self.pool = pool
        self.handoff = handoff
        self.report = report
        self.grace = grace
        self.stragglers: list[asyncio.Task[None]] = []
        # blocks made outside any budget, resized inside budgets
        self.outside = [bytearray(self.rng.randrange(1, 2 * KiB)) for _ in range(8)]

    def _alloc_size(self) -> int:
        return self.rng.choice((0, 1, 7, 64, 500, 513, 4 * KiB, 20 * KiB))

    def op(self, blocks: list[bytearray], b: Budget) -> None:
        """One random operation on ``blocks`` under ``b`` (refusals are handled)."""
        self.report.ops += 1
        kind = self.rng.random()
        try:
            if kind < 0.35:
                size = self._alloc_size()
                if b.live + size + HEADROOM < b.limit or b.tripped:
                    blocks.append(bytearray(size))
            elif kind < 0.5 and blocks:
                blocks.pop(self.rng.randrange(len(blocks)))
            elif kind < 0.65 and blocks:
                block = blocks[self.rng.randrange(len(blocks))]
                if self.rng.random() < 0.5:
                    del block[len(block) // 2 :]
                elif b.live + 2 * len(block) + HEADROOM < b.limit:
                    block.extend(b"y" * (len(block) + 1))
            elif kind < 0.72 and blocks:
                self.pool.append(blocks.pop())  # escapes the budget
            elif kind < 0.78 and self.pool:
                self.pool.pop(self.rng.randrange(len(self.pool)))  # frees someone else's
            elif kind < 0.84 and blocks:
                self.handoff.put(blocks.pop())  # a plain thread frees or resizes it
            elif kind < 0.845:
                bytearray(b.limit)  # a hog: trips (soft) or is refused (past the ceiling)
            elif kind < 0.87:
                # resize a block made outside any budget: it becomes this budget's block
                block = self.outside[self.rng.randrange(len(self.outside))]
                if len(block) > 64 and self.rng.random() < 0.5:
                    del block[32:]
                elif b.live + len(block) + 4 * KiB + HEADROOM < b.limit:
                    block.extend(bytes(self.rng.randrange(1, 4 * KiB)))
        except MemoryError:
            blocks.clear()  # unwind like an app would: drop what this block holds

    async def segment(self, depth: int) -> None:
        limit = self.rng.choice((256 * KiB, 1024 * KiB, 4096 * KiB))
        blocks: list[bytearray] = []
        # A trip's BudgetExceeded may arrive at any safe point of the code under a budget
        # (this segment's or an enclosing one's): it propagates to the segment it is for.
        b = budget(limit)
        try:
            async with b:
                for _ in range(self.rng.randrange(10, 40)):
                    self.op(blocks, b)
                    roll = self.rng.random()
                    if roll < 0.1 and depth < 3:
                        await self.segment(depth + 1)
                    elif roll < 0.15:
                        await asyncio.to_thread(self.thread_ops, self.rng.randrange(1 << 30))
                    elif roll < 0.18 and depth < 3:
                        # a task that outlives this budget, allocating under it after it closed
                        self.stragglers.append(asyncio.create_task(self.straggler(blocks[:3])))
                    elif roll < 0.5:
                        await asyncio.sleep(0)
                if self.rng.random() < 0.5:
                    blocks.clear()  # otherwise they stay alive past the close: retained
        except MemoryError:
            pass  # this budget's, or an enclosing one's passing through this one unchanged
        _check(b, self.report, self.grace)

    async def straggler(self, inherited: list[bytearray]) -> None:
        await asyncio.sleep(0)
        extra = [bytearray(self.rng.randrange(1, 4 * KiB)) for _ in range(5)]
        inherited.clear()
        extra.clear()

    def thread_ops(self, seed: int) -> None:
        rng = random.Random(seed)
        held = [bytearray(rng.randrange(0, 8 * KiB)) for _ in range(rng.randrange(0, 10))]
        for block in held[::2]:
            block.extend(b"z" * 100)
        held.clear()

    async def run(self, rounds: int) -> None:
        for _ in range(rounds):
            await self.segment(0)
        await asyncio.gather(*self.stragglers, return_exceptions=True)


def _drain(handoff: queue.Queue[object]) -> None:
    while True:
        item = handoff.get()
        if item is None:
            return
        if isinstance(item, bytearray) and len(item) > 1:
            del item[1:]  # resize from another thread, then drop


async def _main(seed: int, tasks: int, rounds: int, report: Report, grace: int) -> None:
    pool: list[bytearray] = []
    handoff: queue.Queue[object] = queue.Queue()
    drains = [threading.Thread(target=_drain, args=(handoff,)) for _ in range(2)]
    for t in drains:
        t.start()
    try:
        workers = [_Worker(seed * 1000 + i, pool, handoff, report, grace) for i in range(tasks)]
        await asyncio.gather(*(w.run(rounds) for w in workers))
    finally:
        for _ in drains:
            handoff.put(None)
        for t in drains:
            t.join()
        pool.clear()


def run(seed: int, tasks: int = 6, rounds: int = 8) -> Report:
    """Run the stress once; returns what happened (``errors`` lists broken invariants)."""
    from nea.meter import _select

    grace = 1 << 20
    if _select.active_meter().name == "native":
        from nea import _meter

        grace = _meter.REDELIVER_BYTES
    report = Report()
    asyncio.run(_main(seed, tasks, rounds, report, grace))
    return report


if __name__ == "__main__":
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    result = run(seed, rounds=rounds)
    print(result)
    sys.exit(1 if result.errors else 0)
