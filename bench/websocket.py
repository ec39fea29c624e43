"""WebSocket echo round-trips per second: nea against uvicorn, in the same run.

Each row serves ``_apps:ws_echo`` with nea and with uvicorn, each with the row's backend
(``NEA:UVICORN`` ``--ws`` values; uvloop + httptools for both, access log off), one server
at a time, alternating which goes first in each round. nea always drives websockets
through its sans-IO API, so ``websockets:websockets-sansio`` is the like-for-like row and
``websockets:websockets`` compares against uvicorn's older (default) websockets backend.
The client (the ``websockets`` package, in this process) opens ``--connections``
connections; each sends a 32-byte text message and waits for its echo, again and again,
for ``--duration`` seconds. The table shows the median round-trips/second over
``--rounds`` rounds and nea/uvicorn, then each server's CPU time per round-trip (user +
system, from /proc; lower is better), which a shared machine disturbs less than the rate.

    python bench/websocket.py                       # 3 rounds, 8 connections, 3 s
    python bench/websocket.py --rounds 1 --duration 1

All traffic goes to 127.0.0.1. Needs the ``bench`` extra (it has wsproto and websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import subprocess
import sys
import time

from _common import (
    HOST,
    cpu_seconds,
    free_port,
    nea_command,
    stop,
    uvicorn_command,
    wait_until_listening,
)
from websockets.asyncio.client import connect

MESSAGE = "x" * 32
START_TIMEOUT_SECONDS = 30.0
WARMUP_SECONDS = 0.5


async def _client(url: str, until: float, counts: list[int]) -> None:
    async with connect(url, compression=None, max_queue=None) as ws:
        done = 0
        while time.perf_counter() < until:
            await ws.send(MESSAGE)
            await ws.recv()
            done += 1
        counts.append(done)


async def drive(port: int, pid: int, connections: int, seconds: float) -> tuple[float, float]:
    """Round-trips per second over ``seconds`` with ``connections`` connections, and the
    server's CPU time per round-trip in microseconds (steadier than the rate on a shared
    machine)."""
    url = f"ws://{HOST}:{port}/"
    await asyncio.gather(
        *(_client(url, time.perf_counter() + WARMUP_SECONDS, []) for _ in range(connections))
    )
    counts: list[int] = []
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(_client(url, started + seconds, counts) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    total = sum(counts)
    return total / elapsed, cpu / total * 1e6


def measure(
    command: list[str], port: int, what: str, connections: int, seconds: float
) -> tuple[float, float]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_until_listening(process, port, START_TIMEOUT_SECONDS, what)
        return asyncio.run(drive(port, process.pid, connections, seconds))
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--rows", default="wsproto:wsproto,websockets:websockets-sansio,websockets:websockets"
    )
    parser.add_argument(
        "--nea-args", default="", help="extra nea options, e.g. '--meter off' (none)"
    )
    args = parser.parse_args()
    print(
        f"echo round-trips/s, {args.connections} connections, {args.duration:g} s, "
        f"median of {args.rounds} rounds (python {sys.version.split()[0]})"
    )
    print(
        f"{'--ws nea:uvicorn':<30} {'nea':>7} {'uvicorn':>7} {'ratio':>6}"
        f"   {'CPU µs/round-trip: nea':>22} {'uvicorn':>7} {'ratio':>6}"
    )
    for row in args.rows.split(","):
        nea_backend, _, backend = row.partition(":")
        nea_rates: list[tuple[float, float]] = []
        uvicorn_rates: list[tuple[float, float]] = []
        for round_number in range(args.rounds):
            port = free_port()
            runs = [
                (
                    "nea",
                    nea_command(
                        "_apps:ws_echo", port, "--ws", nea_backend, *shlex.split(args.nea_args)
                    ),
                    nea_rates,
                ),
                (
                    "uvicorn",
                    [*uvicorn_command("_apps:ws_echo", port), "--ws", backend],
                    uvicorn_rates,
                ),
            ]
            if round_number % 2:
                runs.reverse()
            for what, command, rates in runs:
                rates.append(measure(command, port, what, args.connections, args.duration))
        nea_rate = statistics.median(rate for rate, _ in nea_rates)
        uvicorn_rate = statistics.median(rate for rate, _ in uvicorn_rates)
        nea_cpu = statistics.median(cpu for _, cpu in nea_rates)
        uvicorn_cpu = statistics.median(cpu for _, cpu in uvicorn_rates)
        print(
            f"{row:<30} {nea_rate:>7.0f} {uvicorn_rate:>7.0f} {nea_rate / uvicorn_rate:>5.2f}×"
            f"   {nea_cpu:>22.1f} {uvicorn_cpu:>7.1f} {nea_cpu / uvicorn_cpu:>5.2f}×"
        )


if __name__ == "__main__":
    main()
