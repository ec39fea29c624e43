"""Cases for tests/meter/test_c_libraries.py, one per process:
``python -m tests.meter._clib_cases NAME`` prints one JSON line of measurements.

The oracles are independent of nea: glibc's own count of the bytes malloc has handed out
(``mallinfo2``: in-use arena bytes plus mmapped blocks), and known buffer sizes (an image's
pixels, scrypt's 128·r·n working set, Arrow's pool counter).
"""

from __future__ import annotations

import contextvars
import ctypes
import hashlib
import json
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any

import nea
from nea import _meter

MiB = 1024 * 1024


_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split()]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def malloc_in_use() -> int:
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _malloc_is_glibcs() -> bool:
    """Does mallinfo2 see malloc's blocks? Not when another malloc is preloaded (ASan's)."""
    _libc.malloc.restype = ctypes.c_void_p
    before = malloc_in_use()
    block = _libc.malloc(4 * MiB)
    seen = malloc_in_use() - before >= 4 * MiB
    _libc.free(ctypes.c_void_p(block))
    return seen


def _install() -> None:
    with nea.budget("1MiB"):
        pass


def _measured(work: Callable[[], Any]) -> dict[str, Any]:
    """Charged bytes of `work` against glibc's count of malloc's bytes in use."""
    _install()
    table = _meter.c_libraries()
    before = malloc_in_use()
    with nea.budget("2GiB") as b:
        kept = work()
        live = b.live
        truth = malloc_in_use() - before
        after = _meter.c_libraries()
        del kept
    # glibc's count includes the meter's own table of C-library blocks (malloc memory too,
    # and nobody's) and malloc's 8-byte header of every block (budgets charge the size
    # asked for, as they do for Python's blocks)
    overhead = after["table_bytes"] - table["table_bytes"] + 8 * (after["blocks"] - table["blocks"])
    if not _malloc_is_glibcs():
        return {"live": live, "truth": None, "peak": b.statistics().peak}
    return {"live": live, "truth": truth - overhead, "peak": b.statistics().peak}


def pillow() -> dict[str, Any]:
    from PIL import Image

    result = _measured(lambda: Image.new("RGB", (4000, 4000)))
    result["pixels"] = 4000 * 4000 * 4  # RGB is stored as 4 bytes per pixel
    return result


def lxml() -> dict[str, Any]:
    from lxml import etree

    xml = b"<r>" + b"".join(b"<i n='%d'>text %d</i>" % (i, i) for i in range(200_000)) + b"</r>"
    return _measured(lambda: etree.fromstring(xml))


def sqlite() -> dict[str, Any]:
    def work() -> Any:
        db = sqlite3.connect(":memory:")
        db.execute("create table t(a integer, b text)")
        db.executemany("insert into t values (?, ?)", ((i, "x" * 50) for i in range(10**5)))
        db.commit()
        return db

    return _measured(work)


def scrypt() -> dict[str, Any]:
    _install()
    with nea.budget("1GiB") as b:
        hashlib.scrypt(b"pw", salt=b"salt", n=2**15, r=8, p=1, maxmem=2**26)
    stats = b.statistics()
    return {"peak": stats.peak, "retained": stats.retained, "working_set": 128 * 8 * 2**15}


def arrow_system_pool() -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    pool = pa.system_memory_pool()
    before = pool.bytes_allocated()
    source = np.arange(10**7, dtype=np.int64)  # made outside the budget
    held = []

    def work() -> Any:
        floats = pc.cast(pa.array(source), pa.float64(), memory_pool=pool)
        doubled = pc.multiply(floats, 2.0, memory_pool=pool)
        del floats
        held.append(pool.bytes_allocated() - before)
        return doubled

    result = _measured(work)
    result["pool"] = held[0]
    return result


def pandas() -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    def work() -> Any:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(
            {"k": rng.integers(0, 1000, 10**6), "v": rng.random(10**6), "s": rng.random(10**6)}
        )
        return frame, frame.groupby("k").agg({"v": "sum", "s": "mean"})

    return _measured(work)


def threads_apart() -> dict[str, Any]:
    """Two budgets, each running scrypt (no GIL) in its own thread at the same time: each is
    charged its own working set, never the other's."""
    _install()
    budgets: dict[int, Any] = {}
    barrier = threading.Barrier(2)

    def run(n: int) -> None:
        with nea.budget("1GiB") as b:
            budgets[n] = b
            barrier.wait()
            for _ in range(3):
                hashlib.scrypt(b"pw", salt=b"salt", n=n, r=8, p=1, maxmem=2**27)

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(run, n))
        for n in (2**14, 2**16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {str(n): budgets[n].statistics().peak for n in budgets}


def raw_thread() -> dict[str, Any]:
    """A raw thread starts in a fresh context: its work is charged to no budget; the same
    work through copy_context().run is charged to the budget that started it."""
    from PIL import Image

    _install()
    kept: list[Any] = []
    with nea.budget("1GiB") as b:
        t = threading.Thread(target=lambda: kept.append(Image.new("RGB", (2000, 2000))))
        t.start()
        t.join()
        raw = b.live
        ctx = contextvars.copy_context()
        t = threading.Thread(
            target=ctx.run, args=(lambda: kept.append(Image.new("L", (2000, 2000))),)
        )
        t.start()
        t.join()
        copied = b.live - raw
    return {"raw": raw, "copied": copied, "gray": 2000 * 2000}


def _rss_peak_reset() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; return that, in bytes."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def trip_pillow() -> dict[str, Any]:
    """Images past a 16 MiB budget: the loop stops at the first line after the crossing,
    and the process's RSS grows past the budget by no more than that one image."""
    from PIL import Image

    _install()
    made = []
    base = _rss_peak_reset()
    message = None
    try:
        with nea.budget("16MiB") as b:
            for _ in range(8):
                made.append(Image.new("RGB", (1000, 1000), "white"))  # 4 MB each, touched
    except nea.BudgetExceeded as exc:
        message = str(exc)
    rss_growth = _status_bytes("VmHWM") - base
    return {
        "made": len(made),
        "peak": b.statistics().peak,
        "message": message,
        "rss_growth": rss_growth,
    }


def trip_sqlite() -> dict[str, Any]:
    """sqlite past an 8 MiB budget: its pages are allocated without the GIL while it
    steps; the request stops between statements, a batch of rows past its limit."""
    _install()
    batches = 0
    try:
        with nea.budget("8MiB") as b:
            db = sqlite3.connect(":memory:")
            db.execute("create table t(a integer, b text)")
            for _ in range(200):
                db.executemany("insert into t values (?, ?)", ((i, "y" * 100) for i in range(5000)))
                batches += 1
    except nea.BudgetExceeded as exc:
        return {
            "tripped": True,
            "batches": batches,
            "peak": b.statistics().peak,
            "message": str(exc),
        }
    return {"tripped": False, "batches": batches, "peak": b.statistics().peak}


def trip_scrypt() -> dict[str, Any]:
    """One C call without the GIL that takes 32 MiB under a 4 MiB budget: it cannot be
    stopped inside, and the next Python line raises."""
    _install()
    after: list[str] = []
    try:
        with nea.budget("4MiB") as b:
            hashlib.scrypt(b"pw", salt=b"salt", n=2**15, r=8, p=1, maxmem=2**26)
            after.append("next line")
            after.append("and the one after")
    except nea.BudgetExceeded as exc:
        return {"after": after, "peak": b.statistics().peak, "message": str(exc)}
    return {"after": after, "peak": b.statistics().peak, "message": None}


def info() -> dict[str, Any]:
    from PIL import Image  # noqa: F401 (loads _imaging and its bundled libraries)

    _install()
    return dict(_meter.c_libraries())


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]]()))
