"""A randomized stress of charging C libraries' blocks from many threads at once, shared by
the normal suite and ``make asan``.

Threads run random budgets (each in a copy of its context) and, inside them, sqlite3 work
and scrypt calls: both allocate and free through libc's malloc without the GIL, from
several threads at once, while the main thread opens and closes budgets of its own (so
slots change hands and the slot array grows under the threads' feet). Connections escape
their budget: some are closed later by another thread, in another budget or none. Every
budget's numbers are checked when it closes; at the end every block that was recorded is
gone from the table again.

Run directly: ``python -m tests.meter._clib_stress [seed] [seconds]``.
"""

from __future__ import annotations

import contextvars
import gc
import hashlib
import queue
import random
import sqlite3
import sys
import threading
import time

import nea
from nea import _meter

KiB = 1024
MiB = 1024 * KiB


def _check(b: nea.Budget, errors: list[str]) -> None:
    s = b.statistics()
    if not (0 <= s.live <= s.peak):
        errors.append(f"bad accounting {s}")
    if b.tripped and s.peak <= s.limit:
        errors.append(f"tripped below its limit {s}")


def _work(rng: random.Random, escaped: queue.Queue[sqlite3.Connection]) -> None:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("create table t(a integer, b text)")
    rows = rng.randrange(100, 3000)
    db.executemany("insert into t values (?, ?)", ((i, "s" * 64) for i in range(rows)))
    db.execute("select sum(a) from t").fetchone()
    if rng.random() < 0.3:
        hashlib.scrypt(b"pw", salt=b"salt", n=2 ** rng.randrange(8, 13), r=8, p=1)
    if rng.random() < 0.4:
        escaped.put(db)  # closed later, elsewhere
    else:
        db.close()


def _thread(
    seed: int, deadline: float, escaped: queue.Queue[sqlite3.Connection], errors: list[str]
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        limit = rng.choice([256 * KiB, 2 * MiB, 64 * MiB])
        try:
            with nea.budget(limit) as b:
                _work(rng, escaped)
        except (nea.BudgetExceeded, MemoryError, sqlite3.Error):
            pass
        _check(b, errors)
        while rng.random() < 0.5:
            try:
                escaped.get_nowait().close()  # outside any budget, or in this thread's next
            except queue.Empty:
                break


def run(seed: int, seconds: float) -> list[str]:
    with nea.budget("64MiB"):
        # installs the hooks and patches the loaded libraries; OpenSSL's and sqlite's
        # first use fills caches they keep for the process (charged here, kept)
        _work(random.Random(seed), queue.Queue())
        hashlib.scrypt(b"pw", salt=b"salt", n=2**8, r=8, p=1)
    baseline = _meter.c_libraries()["blocks"]
    deadline = time.monotonic() + seconds
    escaped: queue.Queue[sqlite3.Connection] = queue.Queue()
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(_thread, seed * 10 + i, deadline, escaped, errors),
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    held: list[nea.Budget] = []
    while time.monotonic() < deadline:  # slots open and close under the threads' feet
        for _ in range(rng.randrange(1, 40)):
            b = nea.budget(rng.choice([64 * KiB, MiB]))
            b.__enter__()
            held.append(b)
            _ = [bytes(100) for _ in range(10)]
        while held:
            held.pop().__exit__(None, None, None)
        time.sleep(0.001)
    for t in threads:
        t.join(60)
        if t.is_alive():
            errors.append("a worker thread hung")
    while not escaped.empty():
        escaped.get_nowait().close()
    gc.collect()  # connections dropped by an exception between statements
    left = _meter.c_libraries()["blocks"] - baseline
    if left > 64:  # sqlite's own caches may keep a few blocks
        errors.append(f"{left} C-library blocks still recorded after everything closed")
    return errors


if __name__ == "__main__":
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    errors = run(seed, seconds)
    print(f"errors={errors}")
    sys.exit(1 if errors else 0)
