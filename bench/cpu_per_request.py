"""Server CPU time per request at 64 connections, for several nea variants side by side.

Each variant is a label, a Python interpreter (so two installs of nea can be compared, e.g.
a checkout of an earlier commit in its own venv) and extra nea options. For every row and
round, the variants run one after the other (rotating who goes first), each under
``wrk -t1 -c64`` for ``--duration`` seconds; the server's CPU time (utime + stime from
/proc) over the run divided by the requests wrk completed is its CPU per request. Printed:
the median over ``--rounds`` rounds per variant, its ratio to the first variant's median,
and the median of the ratios within each round (the variants of a round run back to back,
so a slow spell of the shared machine tends to hit both sides of a same-round ratio).

    python bench/cpu_per_request.py \\
        --variant "off=.venv/bin/python:--meter off" \\
        --variant "budgets=.venv/bin/python:" \\
        --variant "before=/path/to/old/.venv/bin/python:"
        --variant "no-clibs=.venv/bin/python:NEA_C_LIBRARIES=off"

ARGS may start with ``NAME=VALUE`` words: environment variables for that server.
``--pin 1,0`` keeps the server on CPU 1 and wrk on CPU 0 (on a shared two-CPU machine the
scheduler otherwise moves them about, and their caches with them).

All traffic goes to 127.0.0.1. Needs wrk (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from _common import (
    HOST,
    cpu_seconds,
    free_port,
    on_cpu,
    parse_with_pin,
    stop,
    wait_until_listening,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROWS = {"hello": ("hello:app", "/"), "json": ("starlette_app:app", "/json")}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="LABEL=PYTHON:ARGS")
    parser.add_argument("--rows", default="hello,json", help="from: " + ", ".join(ROWS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    return parse_with_pin(parser)


def run_once(wrk: str, python: str, extra: list[str], row: str, args: argparse.Namespace) -> float:
    """CPU µs per request of one server for one wrk run."""
    app, path = ROWS[row]
    env = dict(os.environ)
    while extra and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", extra[0]):
        name, _, value = extra[0].partition("=")
        env[name] = value
        extra = extra[1:]
    port = free_port()
    command = [python, "-m", "nea", app, "--app-dir", str(EXAMPLES), "--host", HOST]
    command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log", "--log-level", "warning", *extra]
    server_cpu, client_cpu = args.cpus or (None, None)
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=on_cpu(server_cpu),
    )
    try:
        wait_until_listening(server, port, 30, "nea")
        url = f"http://{HOST}:{port}{path}"
        pin = on_cpu(client_cpu)
        subprocess.run(
            [wrk, "-t1", "-c16", "-d1s", url], capture_output=True, check=True, preexec_fn=pin
        )
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            [wrk, "-t1", f"-c{args.connections}", f"-d{args.duration}s", url],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=pin,
        ).stdout
        used = cpu_seconds(server.pid) - before
    finally:
        stop(server)
    match = re.search(r"(\d+) requests in", out)
    if match is None or "Non-2xx" in out:
        raise SystemExit(f"wrk failed against {command}:\n{out}")
    return used / int(match.group(1)) * 1e6


def main() -> None:
    args = parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk)")
    variants = []
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        python, _, extra = rest.partition(":")
        variants.append((label, python or sys.executable, shlex.split(extra)))
    for row in args.rows.split(","):
        samples: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
            for label, python, extra in order:
                samples[label].append(run_once(wrk, python, extra, row, args))
        base = samples[variants[0][0]]
        first = statistics.median(base)
        print(
            f"{row}: CPU µs per request at {args.connections} connections (median; its ratio"
            " to the first variant's; the median of the same-round ratios)"
        )
        for label, _, _ in variants:
            value = statistics.median(samples[label])
            paired = statistics.median(v / b for v, b in zip(samples[label], base, strict=True))
            runs = ", ".join(f"{v:.1f}" for v in samples[label])
            print(
                f"  {label:<12} {value:8.1f}  {value / first - 1:+7.1%}  {paired - 1:+7.1%}"
                f"   ({runs})"
            )


if __name__ == "__main__":
    main()
