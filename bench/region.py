"""Benchmarks of the preallocated region (docs/internals/region.md), side by side in one run.

1. **Metering cost** on nea's own server: the same app served with budgets (``--meter
   native``, region on), with budgets on the block table only (``--region off``) and without
   metering (``--meter off``). All servers run at once; wrk alternates between them for
   ``--rounds`` rounds. Printed per row: the median req/s of each, and the median server
   CPU time per request (from /proc, steadier than req/s on a shared machine), with the
   ratios against ``--meter off``. Rows: ``hello`` (raw ASGI) and ``json`` (Starlette
   JSONResponse, ~20 KB).
2. **RSS drift**: ``--requests`` mixed requests (hello, JSON, a 1 MiB allocation, and one
   request in 50 allocating past the budget: a trip under nea, a big allocation under
   uvicorn) to nea (budgets + region) and to uvicorn, one after the other; RSS after the
   first 10k requests and at the end, and the drift between them.

Usage: python bench/region.py [--rounds 5] [--duration 3] [--requests 200000] [--skip-drift]
Needs wrk on PATH, uvloop, httptools, uvicorn and the C extension. All traffic goes to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import (
    HOST,
    NEA_BUDGET,
    NEA_SLOTS,
    cpu_seconds,
    free_port,
    nea_command,
    stop,
    uvicorn_command,
    wait_until_listening,
)

MIXED_LUA = """
local paths = {}
for i = 1, 50 do
  if i == 50 then paths[i] = "/hog"
  elseif i % 3 == 0 then paths[i] = "/work"
  else paths[i] = "/json" end
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % 50) + 1])
end
"""


def start(command: list[str], port: int, workdir: Path, log_name: str) -> subprocess.Popen[bytes]:
    with (workdir / log_name).open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_until_listening(process, port, 30, f"{command} (log: {workdir / log_name})")
    except BaseException:
        stop(process)
        raise
    return process


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wrk(url: str, seconds: float, script: Path | None = None, connections: int = 16) -> int:
    """Run wrk; return the number of requests it completed."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+) requests in", output)
    return int(found.group(1)) if found else 0


VARIANTS = {
    "meter off": ("--meter", "off"),
    "budgets, table": ("--region", "off"),
    "budgets, region": ("--region", "on"),
}
ROWS = {"hello": ("_apps:hello", "/"), "json": ("_apps:app", "/json")}


def cost(workdir: Path, rounds: int, duration: float) -> None:
    print(f"\n1. metering cost: nea, wrk -t1 -c16 -d{duration:g}s, {rounds} rounds, medians")
    for row, (app, path) in ROWS.items():
        ports = {name: free_port() for name in VARIANTS}
        procs = {
            name: start(nea_command(app, ports[name], *VARIANTS[name]), ports[name], workdir, "n")
            for name in VARIANTS
        }
        rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        try:
            for name in VARIANTS:
                wrk(f"http://{HOST}:{ports[name]}{path}", 1)  # warm up
            for r in range(rounds):
                order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    before = cpu_seconds(procs[name].pid)
                    done = wrk(f"http://{HOST}:{ports[name]}{path}", duration)
                    used = cpu_seconds(procs[name].pid) - before
                    rates[name].append(done / duration)
                    cpu[name].append(used / max(done, 1) * 1e6)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait()
        base_rate = statistics.median(rates["meter off"])
        base_cpu = statistics.median(cpu["meter off"])
        print(f"  {row}:")
        for name in VARIANTS:
            rate, us = statistics.median(rates[name]), statistics.median(cpu[name])
            print(
                f"    {name:16} {rate:8.0f} req/s ({rate / base_rate - 1:+6.1%})"
                f"   {us:6.0f} us CPU/request ({us / base_cpu - 1:+6.1%})"
            )


def settled_rss(pid: int, port: int) -> int:
    """RSS once the requests wrk left in flight are done: a few plain requests, one at a
    time, first (wrk stops mid-request; a hog still running would count)."""
    for _ in range(5):
        with socket.create_connection((HOST, port)) as conn:
            conn.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while conn.recv(65536):
                pass
    return rss_bytes(pid)


def drift(workdir: Path, requests: int, chunk: float) -> None:
    script = workdir / "mixed.lua"
    script.write_text(MIXED_LUA)
    print(
        f"\n2. RSS drift: {requests} mixed requests (1 in 50 past the budget), "
        "RSS after the first 10k and at the end"
    )
    servers: dict[str, Callable[[int], list[str]]] = {
        "nea (budgets + region)": lambda port: nea_command("_apps:app", port),
        "nea --prefault": lambda port: nea_command("_apps:app", port, "--prefault"),
        "uvicorn": lambda port: uvicorn_command("_apps:app", port),
    }
    for name, command in servers.items():
        port = free_port()
        proc = start(command(port), port, workdir, "d")
        try:
            done, first = 0, 0
            while done < requests:
                done += wrk(f"http://{HOST}:{port}/", chunk, script, connections=8)
                if first == 0 and done >= 10_000:
                    first = settled_rss(proc.pid, port)
            last = settled_rss(proc.pid, port)
        finally:
            proc.terminate()
            proc.wait()
        print(
            f"  {name:24} {first / 2**20:7.1f} MiB -> {last / 2**20:7.1f} MiB"
            f"  drift {last / first - 1:+6.1%}  ({done} requests)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3, help="seconds per wrk run")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-drift", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk)")
    version = sys.version.split()[0]
    print(f"python {version}, {os.cpu_count()} CPUs, budget {NEA_BUDGET} x {NEA_SLOTS}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.skip_cost:
            cost(workdir, args.rounds, args.duration)
        if not args.skip_drift:
            drift(workdir, args.requests, chunk=2)


if __name__ == "__main__":
    main()
