"""WebSocket echo round-trips per second: nea against uvicorn, in the same run.

Each row serves ``_apps:ws_echo`` with nea and with uvicorn, each with the row's backend
(``NEA:UVICORN`` ``--ws`` values; uvloop + httptools for both, access log off), one server
at a time, alternating which goes first in each round. nea always drives websockets
through its sans-IO API, so ``websockets:websockets-sansio`` is the like-for-like row and
``websockets:websockets`` compares against uvicorn's older (default) websockets backend.
The client (the ``websockets`` package, in this process) opens ``--connections``
connections; each sends a 32-byte text message and waits for its echo, again and again,
for ``--duration`` seconds. The table shows the median round-trips/second over
``--rounds`` rounds and nea/uvicorn.

    python bench/websocket.py                       # 3 rounds, 8 connections, 3 s
    python bench/websocket.py --rounds 1 --duration 1

All traffic goes to 127.0.0.1. Needs the ``bench`` extra (it has wsproto and websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from _common import HOST, free_port, nea_command, stop, uvicorn_command, wait_until_listening
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


async def drive(port: int, connections: int, seconds: float) -> float:
    """Round-trips per second over ``seconds`` with ``connections`` connections."""
    url = f"ws://{HOST}:{port}/"
    await asyncio.gather(
        *(_client(url, time.perf_counter() + WARMUP_SECONDS, []) for _ in range(connections))
    )
    counts: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(url, started + seconds, counts) for _ in range(connections)))
    return sum(counts) / (time.perf_counter() - started)


def measure(command: list[str], port: int, what: str, connections: int, seconds: float) -> float:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_until_listening(process, port, START_TIMEOUT_SECONDS, what)
        return asyncio.run(drive(port, connections, seconds))
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
    args = parser.parse_args()
    print(
        f"echo round-trips/s, {args.connections} connections, {args.duration:g} s, "
        f"median of {args.rounds} rounds (python {sys.version.split()[0]})"
    )
    print(f"{'--ws nea:uvicorn':<33} {'nea':>8} {'uvicorn':>8} {'nea/uvicorn':>12}")
    for row in args.rows.split(","):
        nea_backend, _, backend = row.partition(":")
        nea_rates: list[float] = []
        uvicorn_rates: list[float] = []
        for round_number in range(args.rounds):
            port = free_port()
            runs = [
                ("nea", nea_command("_apps:ws_echo", port, "--ws", nea_backend), nea_rates),
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
        nea_rate = statistics.median(nea_rates)
        uvicorn_rate = statistics.median(uvicorn_rates)
        print(f"{row:<33} {nea_rate:>8.0f} {uvicorn_rate:>8.0f} {nea_rate / uvicorn_rate:>11.2f}×")


if __name__ == "__main__":
    main()
