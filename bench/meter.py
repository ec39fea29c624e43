"""Benchmark of nea's memory meter.

1. ns per PyObject_Malloc/PyObject_Free pair (64 bytes, a C loop in nea._meter): without
   the hooks, with the hooks and no budget open, with the hooks and no budget in this
   context while another budget is open, and inside a budget (with few and with 100k live
   tracked blocks).
2. A Starlette JSON endpoint (~20 KB of JSON) under uvicorn, with a budget entered around
   every request (a pure-ASGI wrapper: the same mechanism nea's server uses) vs the same
   app without metering (the apps: ``plain`` and ``metered`` in bench/_apps.py). Both
   servers run at once; wrk alternates between them, rounds times. Printed: the median
   server CPU time per request of each (utime + stime from /proc around each wrk run: the
   headline, steadier than req/s on a shared machine) and the median req/s, and their
   ratios.

Usage: python bench/meter.py [--rounds 3] [--duration 5] [--skip-http]
Needs wrk on PATH and the C extension built. Numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from _common import HOST, cpu_seconds, free_port, stop, uvicorn_command, wait_until_listening

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


def _pin(cpu: int) -> list[str]:
    # Servers on one CPU, wrk on the other: less migration noise on a 2-CPU machine.
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def _wrk(port: int, duration: int) -> int:
    """Run wrk against the server on ``port``; return the number of requests it completed."""
    out = subprocess.run(
        [*_pin(1), "wrk", "-t1", "-c64", f"-d{duration}s", f"http://{HOST}:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    match = re.search(r"(\d+) requests in", out)
    if match is None:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return int(match.group(1))


VARIANTS = {"plain": "_apps:plain", "metered": "_apps:metered"}


def http(rounds: int, duration: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """req/s and server CPU µs per request of each variant, one entry per round."""
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu_us: dict[str, list[float]] = {name: [] for name in VARIANTS}
    ports = {name: free_port() for name in VARIANTS}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, app in VARIANTS.items():
            procs[name] = subprocess.Popen([*_pin(0), *uvicorn_command(app, ports[name])])
            wait_until_listening(procs[name], ports[name], 20, f"uvicorn {app}")
        for name, port in ports.items():
            body = urllib.request.urlopen(f"http://{HOST}:{port}/").read()
            print(f"{name}: response {len(body)} bytes, valid JSON: {bool(json.loads(body))}")
        for r in range(rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                pid = procs[name].pid
                before = cpu_seconds(pid)
                done = _wrk(ports[name], duration)
                used = cpu_seconds(pid) - before
                rates[name].append(done / duration)
                cpu_us[name].append(used / max(done, 1) * 1e6)
    finally:
        for proc in procs.values():
            stop(proc)
    return rates, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    if not args.skip_http and shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk), or use --skip-http")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"ns per {ALLOC_SIZE}-byte PyObject_Malloc/Free pair (best of 5 x {PAIRS:,}):")
    for label, ns in micro():
        print(f"  {label:45s} {ns:6.1f} ns")
    if args.skip_http:
        return
    rates, cpu_us = http(args.rounds, args.duration)
    print(
        f"Starlette JSON endpoint, uvicorn, wrk -t1 -c64 -d{args.duration}s, "
        f"{args.rounds} rounds, medians; the headline is the server's CPU time per request "
        "(user + system from /proc/PID/stat), steadier than req/s on a shared machine:"
    )
    labels = {"plain": "without metering", "metered": "budget per request"}
    for name, label in labels.items():
        rate, us = statistics.median(rates[name]), statistics.median(cpu_us[name])
        rounds = ", ".join(f"{x:.1f}" for x in cpu_us[name])
        print(f"  {label:18} {us:8.1f} µs CPU/request {rate:9.1f} req/s   rounds (µs) {rounds}")
    rate_ratio = statistics.median(rates["metered"]) / statistics.median(rates["plain"])
    cpu_ratio = statistics.median(cpu_us["metered"]) / statistics.median(cpu_us["plain"])
    print(
        f"  metered/plain: CPU per request {cpu_ratio:.3f} ({cpu_ratio - 1:+.1%}), "
        f"throughput {rate_ratio:.3f} (cost {1 - rate_ratio:.1%})"
    )


if __name__ == "__main__":
    main()
