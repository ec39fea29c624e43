"""Python-side cost of budgeted admission, per request, without sockets or an event loop.

Each case runs a trivial ASGI app (``http.response.start`` + one body, to a ``send`` that
does nothing) through nea's ``Admission`` many times, in one coroutine that never suspends,
and prints the best time per request over ``--repeats`` runs (µs):

- ``no budget``: ``Admission(budget=None, slots=None)`` (the bare path);
- ``budget``: ``Admission(budget=..., slots=None)`` (a budget per request, no slots);
- ``budget + slots``: ``Admission(budget=..., slots=64)`` (what nea's server runs);
- ``slots, no budget``: ``Admission(budget=None, slots=64)``;
- ``nea.budget enter/exit``: ``with nea.budget(limit): pass`` alone;
- ``Budget.tripped``: reading ``tripped`` of an open budget.

Times on a shared machine are noisy; ``--instructions`` instead counts CPU instructions
per request with valgrind's callgrind (deterministic to a few instructions): each case
runs twice in a subprocess, with N and 2N iterations, and the difference is divided by N.

    python bench/admission.py                        # timings
    python bench/admission.py --instructions         # instruction counts (needs valgrind)

Needs the C extension (native meter).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import nea
from nea._admission import Admission

LIMIT = 16 * 1024 * 1024
SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"ok"}


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _admission_case(budget: int | None, slots: int | None) -> Callable[[int], None]:
    admission = Admission(budget=budget, slots=slots)

    def run(n: int) -> None:
        async def many() -> None:
            for _ in range(n):
                await admission(_app, SCOPE, _receive, _send)

        coro = many()
        try:
            coro.send(None)  # never suspends: no event loop needed
        except StopIteration:
            return
        raise RuntimeError("the request suspended")

    return run


def _budget_case(n: int) -> None:
    budget = nea.budget
    for _ in range(n):
        with budget(LIMIT):
            pass


def _tripped_case(n: int) -> None:
    with nea.budget(1 << 30) as b:
        for _ in itertools.repeat(None, n):  # allocates nothing per iteration, unlike range
            b.tripped  # noqa: B018 (the read is what is measured)


CASES: dict[str, Callable[[int], None]] = {
    "no budget": _admission_case(None, None),
    "budget": _admission_case(LIMIT, None),
    "budget + slots": _admission_case(LIMIT, 64),
    "slots, no budget": _admission_case(None, 64),
    "nea.budget enter/exit": _budget_case,
    "Budget.tripped": _tripped_case,
}


def _best_us(case: Callable[[int], None], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        case(n)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def _instructions(name: str, n: int) -> float:
    """Instructions per iteration of ``name``: callgrind at N and 2N iterations."""
    counts = []
    for iterations in (n, 2 * n):
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        command += [sys.executable, __file__, "--run", name, "--requests", str(iterations)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise SystemExit(f"no instruction count from callgrind:\n{done.stderr}")
        counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--run", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if nea.meter.backend() != "native":
        raise SystemExit("the native meter is not available; build the C extension first")
    if args.run:  # one case under callgrind
        CASES[args.run](1000)
        CASES[args.run](args.requests)
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind on PATH")
        n = min(args.requests, 5000)
        print(f"{'case':24s} {'instructions per request':>26s}")
        for name in CASES:
            print(f"{name:24s} {_instructions(name, n):26,.0f}")
        return
    # Warm up every case first (hooks installed, tables and allocator arenas grown): the
    # first hundred thousand budgeted requests of a process are measurably slower.
    for case in CASES.values():
        case(args.requests)
    print(f"{'case':24s} {'µs per request':>16s}")
    for name, case in CASES.items():
        gc.collect()
        print(f"{name:24s} {_best_us(case, args.requests, args.repeats):16.2f}")


if __name__ == "__main__":
    main()
