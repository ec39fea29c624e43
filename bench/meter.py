"""Benchmark of nea's memory meter.

1. ns per PyObject_Malloc/PyObject_Free pair (64 bytes, a C loop in nea._meter): without
   the hooks, with the hooks and no budget open, with the hooks and no budget in this
   context while another budget is open, and inside a budget (with few and with 100k live
   tracked blocks).
2. A Starlette JSON endpoint (~20 KB of JSON) under uvicorn, with a budget entered around
   every request (a pure-ASGI wrapper: the same mechanism nea's server uses) vs the same
   app without metering. Both servers run at once; wrk alternates between them, rounds
   times; the median req/s of each and their ratio are printed.

Usage: python bench/meter.py [--rounds 3] [--duration 5] [--skip-http]
Needs wrk on PATH and the C extension built. Numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

PAIRS = 2_000_000
ALLOC_SIZE = 64


def _ns_per_pair(loop: Any, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        loop(PAIRS, ALLOC_SIZE)
        best = min(best, (time.perf_counter_ns() - start) / PAIRS)
    return best


def micro() -> list[tuple[str, float]]:
    import contextvars

    import nea
    from nea import _meter

    rows = []
    if _meter.installed():
        raise SystemExit("the meter hooks are already installed; run this in a fresh process")
    rows.append(("no hook", _ns_per_pair(_meter.alloc_free_loop)))
    with nea.budget("1GiB"):
        pass  # installs the hooks
    rows.append(("hook, no budget open", _ns_per_pair(_meter.alloc_free_loop)))
    with nea.budget("1GiB"):
        no_budget = contextvars.Context()
        # the hook reads the contextvar; this context has no budget
        rows.append(
            (
                "hook, no budget here (one open elsewhere)",
                no_budget.run(_ns_per_pair, _meter.alloc_free_loop),
            )
        )
    with nea.budget("1GiB"):
        rows.append(("hook + budget", _ns_per_pair(_meter.alloc_free_loop)))
    with nea.budget("1GiB"):
        live = [object() for _ in range(100_000)]
        rows.append(("hook + budget, 100k live blocks", _ns_per_pair(_meter.alloc_free_loop)))
        del live
    return rows


APP_SOURCE = """
import nea
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

ITEMS = [
    {"id": i, "name": f"item {i}", "price": i * 1.25, "tags": ["a", "b", "c"]}
    for i in range(280)
]

async def items(request):
    return JSONResponse({"items": ITEMS})

plain = Starlette(routes=[Route("/", items)])

class BudgetPerRequest:
    def __init__(self, app, limit):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        async with nea.budget(self.limit):
            await self.app(scope, receive, send)

metered = BudgetPerRequest(plain, "16MiB")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    # Servers on one CPU, wrk on the other: less migration noise on a 2-CPU machine.
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def _start(app_dir: str, attr: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        *_pin(0),
        sys.executable,
        "-m",
        "uvicorn",
        f"bench_meter_app:{attr}",
        "--app-dir",
        app_dir,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)  # polling a port that is not open yet: nothing to wait on
    proc.kill()
    raise SystemExit(f"uvicorn did not start on port {port}")


def _wrk(port: int, duration: int) -> float:
    out = subprocess.run(
        [*_pin(1), "wrk", "-t1", "-c64", f"-d{duration}s", f"http://127.0.0.1:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if match is None:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return float(match.group(1))


def http(rounds: int, duration: int) -> dict[str, list[float]]:
    import tempfile
    import urllib.request

    results: dict[str, list[float]] = {"plain": [], "metered": []}
    with tempfile.TemporaryDirectory() as app_dir:
        with open(os.path.join(app_dir, "bench_meter_app.py"), "w") as f:
            f.write(APP_SOURCE)
        ports = {"plain": _free_port(), "metered": _free_port()}
        procs = [_start(app_dir, name, port) for name, port in ports.items()]
        try:
            for name, port in ports.items():
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
                print(f"{name}: response {len(body)} bytes, valid JSON: {bool(json.loads(body))}")
            for _ in range(rounds):
                for name, port in ports.items():
                    results[name].append(_wrk(port, duration))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"ns per {ALLOC_SIZE}-byte PyObject_Malloc/Free pair (best of 5 x {PAIRS:,}):")
    for label, ns in micro():
        print(f"  {label:45s} {ns:6.1f} ns")
    if args.skip_http:
        return
    results = http(args.rounds, args.duration)
    plain = statistics.median(results["plain"])
    metered = statistics.median(results["metered"])
    print(
        f"Starlette JSON endpoint, uvicorn, wrk -t1 -c64 -d{args.duration}s, {args.rounds} rounds:"
    )
    print(f"  without metering   median {plain:9.1f} req/s   rounds {results['plain']}")
    print(f"  budget per request median {metered:9.1f} req/s   rounds {results['metered']}")
    cost = 100 * (1 - metered / plain)
    print(f"  ratio metered/plain {metered / plain:.3f} (throughput cost {cost:.1f} %)")


if __name__ == "__main__":
    main()
