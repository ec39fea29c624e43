"""What charging C libraries' ``malloc`` costs the libraries themselves.

Each row runs a C-heavy workload (an lxml parse and the tree's release, sqlite inserts, a
Pillow image and resize, scrypt) outside any budget and inside one, in a fresh interpreter
per setting: nea's wrappers on (the default) and off (``NEA_C_LIBRARIES=off``). Printed:
the median of ``--repeat`` runs per cell and the on/off ratio. Blocks made inside a budget
are recorded in a table (a lock and a hash-table insert per ``malloc``, a lookup and
delete per ``free``); outside any budget a wrapper costs a thread-state check.

    python bench/c_libraries.py                 # every row, 7 runs per cell
    python bench/c_libraries.py --rows lxml,sqlite --repeat 5

Needs lxml and Pillow (the ``test`` extra) for their rows; rows whose library is missing
are skipped. Runs nothing over the network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROWS = ("lxml", "lxml-free", "sqlite", "pillow", "scrypt")


def _workloads() -> dict[str, tuple[Callable[[], Any], Callable[[Any], None]]]:
    """name -> (work, release); the timed part of "lxml-free" is the release."""
    import hashlib
    import sqlite3

    rows: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
    try:
        from lxml import etree

        xml = b"<r>" + b"".join(b"<i n='%d'>text %d</i>" % (i, i) for i in range(200_000))
        xml += b"</r>"
        rows["lxml"] = rows["lxml-free"] = (lambda: etree.fromstring(xml), lambda tree: None)
    except ImportError:
        pass

    def inserts() -> None:
        db = sqlite3.connect(":memory:")
        db.execute("create table t(a integer, b text)")
        db.executemany("insert into t values (?, ?)", ((i, "x" * 50) for i in range(100_000)))
        db.close()

    rows["sqlite"] = (inserts, lambda _: None)
    try:
        from PIL import Image

        rows["pillow"] = (
            lambda: Image.new("RGB", (2000, 2000)).resize((1000, 1000)),
            lambda _: None,
        )
    except ImportError:
        pass
    rows["scrypt"] = (
        lambda: hashlib.scrypt(b"pw", salt=b"salt", n=2**14, r=8, p=1),
        lambda _: None,
    )
    return rows


def child(row: str, where: str, repeat: int) -> list[float]:
    """Runs in the fresh interpreter: seconds per run of `row`, inside a budget or not."""
    import nea

    with nea.budget("1MiB"):
        pass  # installs the hooks (and patches the loaded libraries)
    work, release = _workloads()[row]
    times = []
    for _ in range(repeat):
        budget = nea.budget("4GiB") if where == "inside" else None
        if budget is not None:
            budget.__enter__()
        start = time.perf_counter()
        kept = work()
        if row == "lxml-free":
            start = time.perf_counter()
            del kept
            kept = None
        times.append(time.perf_counter() - start)
        release(kept)
        del kept
        if budget is not None:
            budget.__exit__(None, None, None)
    return times


def measure(row: str, where: str, c_libraries: str, repeat: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", row, where, str(repeat)],
        env={**os.environ, "NEA_C_LIBRARIES": c_libraries, "NEA_METER": "native"},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return float(statistics.median(json.loads(out)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="from: " + ", ".join(ROWS))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row, where, repeat = args.child
        print(json.dumps(child(row, where, int(repeat))))
        return
    available = _workloads()
    print(f"{'row':<10} {'where':<8} {'wrappers off':>13} {'wrappers on':>12}  on/off")
    for row in args.rows.split(","):
        if row not in available:
            print(f"{row:<10} skipped (library not installed)")
            continue
        for where in ("outside", "inside"):
            off = measure(row, where, "off", args.repeat)
            on = measure(row, where, "on", args.repeat)
            print(f"{row:<10} {where:<8} {off * 1e3:10.1f} ms {on * 1e3:9.1f} ms  {on / off:5.2f}×")


if __name__ == "__main__":
    main()
