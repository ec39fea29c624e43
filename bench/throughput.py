"""Throughput of nea against uvicorn, measured in the same run with wrk.

Every row serves the same application with both servers (uvloop + httptools for both, access
log off, log level warning), one server at a time, rotating which goes first in each round.
wrk drives each server for ``--duration`` seconds with ``--connections`` connections on one
thread. The headline is the server's CPU time per request (user + system from /proc over the
wrk run, divided by the requests wrk completed): on a shared machine it moves far less than
requests/second, which contention for the CPUs changes from one run to the next. The table
shows the medians over ``--rounds`` rounds of both, and their ratios nea/uvicorn
(``uvicorn/nea`` for CPU, so that above 1 means nea is ahead in both columns).
``--meter-off`` adds nea with ``--meter off`` as a third server: the cost of budgets in the
same run. ``--pin 1,0`` keeps every server on CPU 1 and wrk on CPU 0.

    python bench/throughput.py                      # 3 rounds, wrk -t1 -c64 -d5s
    python bench/throughput.py --rounds 1 --duration 2 --rows hello,json --meter-off

All traffic goes to 127.0.0.1. Needs wrk (``apt-get install wrk``) and the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import cpu_seconds, on_cpu, parse_with_pin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"
ECHO_BODY_BYTES = 64 * 1024
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
WARMUP_SECONDS = 1


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    app: str
    path: str
    http: str = "httptools"
    post_bytes: int = 0


ROWS = [
    Row("hello", "raw ASGI hello", "hello:app", "/"),
    Row("plaintext", "Starlette PlainTextResponse", "starlette_app:app", "/plaintext"),
    Row("json", "Starlette JSONResponse (~20 KB)", "starlette_app:app", "/json"),
    Row(
        "echo",
        "Starlette POST echo (64 KiB)",
        "starlette_app:app",
        "/echo",
        post_bytes=ECHO_BODY_BYTES,
    ),
    Row("hello-h11", "raw ASGI hello, h11 vs h11", "hello:app", "/", http="h11"),
]
SERVERS = ("nea", "uvicorn")
NEA_OFF = "nea-off"  # nea --meter off (``--meter-off``)


@dataclass
class Result:
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # µs per request
    errors: dict[str, int] = field(default_factory=dict)


def main() -> int:
    args = parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install wrk (or brew install wrk)", file=sys.stderr)
        return 1
    rows = select_rows(args.rows)
    servers = (*SERVERS, NEA_OFF) if args.meter_off else SERVERS
    print_environment(wrk, args)
    results = {row.name: Result() for row in rows}
    with tempfile.TemporaryDirectory(prefix="nea-bench-") as tmp:
        workdir = Path(tmp)
        for round_number in range(args.rounds):
            # Rotate who goes first so warm caches or thermal drift favour nobody.
            shift = round_number % len(servers)
            order = servers[shift:] + servers[:shift]
            for row in rows:
                for server in order:
                    rate, cpu, errors = measure(wrk, server, row, args, workdir)
                    result = results[row.name]
                    result.rates.setdefault(server, []).append(rate)
                    result.cpu.setdefault(server, []).append(cpu)
                    result.errors[server] = result.errors.get(server, 0) + errors
                    print(
                        f"round {round_number + 1}/{args.rounds} {row.name:<10} {server:<8} "
                        f"{cpu:>8.1f} µs/req {rate:>10.0f} req/s"
                        + (f"  ({errors} errors)" if errors else ""),
                        flush=True,
                    )
    print_table(rows, results, servers)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per row and server")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--rows",
        default=",".join(row.name for row in ROWS),
        help=f"comma-separated rows to run, from: {', '.join(row.name for row in ROWS)}",
    )
    parser.add_argument(
        "--meter-off",
        action="store_true",
        help="also run nea with --meter off (the cost of budgets, in the same run)",
    )
    parser.add_argument(
        "--nea-args",
        default="",
        help="extra options for nea only, e.g. '--meter off' (default: nea's defaults, budgets on)",
    )
    return parse_with_pin(parser)


def select_rows(text: str) -> list[Row]:
    by_name = {row.name: row for row in ROWS}
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise SystemExit(f"unknown row {unknown[0]!r}; choose from {', '.join(by_name)}")
    return [by_name[name] for name in names]


def server_command(server: str, row: Row, port: int, nea_args: str = "") -> list[str]:
    common = [
        row.app,
        "--app-dir",
        str(EXAMPLES),
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        row.http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if server == NEA_OFF:
        return [sys.executable, "-m", "nea", *common, *shlex.split(nea_args), "--meter", "off"]
    extra = shlex.split(nea_args) if server == "nea" else []
    return [sys.executable, "-m", server, *common, *extra]


def measure(
    wrk: str, server: str, row: Row, args: argparse.Namespace, workdir: Path
) -> tuple[float, float, int]:
    """Start ``server`` for ``row``, warm it up, run wrk once; return (req/s, server CPU µs
    per request, errors)."""
    port = free_port()
    log_path = workdir / f"{server}-{row.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(server, row, port, args.nea_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=on_cpu(None if args.cpus is None else args.cpus[0]),
        )
        try:
            wait_until_accepting(process, port, log_path)
            url = f"http://{HOST}:{port}{row.path}"
            script = lua_script(row, workdir)
            client_cpu = None if args.cpus is None else args.cpus[1]
            run_wrk(wrk, url, script, WARMUP_SECONDS, args.connections, client_cpu)
            before = cpu_seconds(process.pid)
            output = run_wrk(wrk, url, script, args.duration, args.connections, client_cpu)
            used = cpu_seconds(process.pid) - before
        finally:
            stop(process)
    rate, requests, errors = parse_wrk(output)
    return rate, used / max(requests, 1) * 1e6, errors


def free_port() -> int:
    # The port is free now; the server binds it a moment later (fine on a quiet machine).
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until_accepting(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Connect until the server accepts; bounded, and stops early if the server exits."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            # Waiting on the process doubles as the retry delay and notices an early exit.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
            if process.returncode is not None:
                break
    log = log_path.read_text(errors="replace")
    raise SystemExit(f"server did not start on port {port} (exit {process.returncode}):\n{log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def lua_script(row: Row, workdir: Path) -> Path | None:
    if not row.post_bytes:
        return None
    path = workdir / f"post-{row.post_bytes}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("a", {row.post_bytes})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    return path


def run_wrk(
    wrk: str,
    url: str,
    script: Path | None,
    seconds: int,
    connections: int,
    cpu: int | None = None,
) -> str:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        preexec_fn=on_cpu(cpu),
    )
    if completed.returncode != 0:
        raise SystemExit(f"wrk failed ({completed.returncode}):\n{completed.stderr}")
    return completed.stdout


def parse_wrk(output: str) -> tuple[float, int, int]:
    """(requests/second, requests completed, errors) from wrk's report."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if rate is None or count is None:
        raise SystemExit(f"cannot read wrk output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return float(rate.group(1)), int(count.group(1)), errors


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_environment(wrk: str, args: argparse.Namespace) -> None:
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first_line = (wrk_version.stdout or wrk_version.stderr).splitlines()[:1]
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(
        f"nea {version('nea')}, uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, "
        f"httptools {version('httptools')}, h11 {version('h11')}, "
        f"starlette {version('starlette')}"
    )
    print(f"{first_line[0] if first_line else 'wrk'}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
        f"medians; every server: --loop uvloop --no-access-log --log-level warning"
    )
    print(f"nea options: {args.nea_args or 'defaults (per-request budgets on)'}\n")


def print_table(rows: list[Row], results: dict[str, Result], servers: tuple[str, ...]) -> None:
    off = NEA_OFF in servers
    print()
    print(
        "| row | nea CPU µs/req | uvicorn CPU µs/req | uvicorn/nea CPU"
        + (" | nea --meter off CPU µs/req | budgets' cost" if off else "")
        + " | nea req/s | uvicorn req/s | nea/uvicorn req/s |"
    )
    print("|---|---:|---:|---:|" + ("---:|---:|" if off else "") + "---:|---:|---:|")
    for row in rows:
        result = results[row.name]
        cpu = {server: statistics.median(result.cpu[server]) for server in servers}
        rate = {server: statistics.median(result.rates[server]) for server in servers}
        errors = sum(result.errors.values())
        note = f" ({errors} errors)" if errors else ""
        cells = [row.title, f"{cpu['nea']:.1f}", f"{cpu['uvicorn']:.1f}"]
        cells.append(f"{cpu['uvicorn'] / cpu['nea']:.2f}")
        if off:
            cells += [f"{cpu[NEA_OFF]:.1f}", f"{cpu['nea'] / cpu[NEA_OFF] - 1:+.1%}"]
        cells += [f"{rate['nea']:.0f}", f"{rate['uvicorn']:.0f}"]
        cells.append(f"{rate['nea'] / rate['uvicorn']:.2f}{note}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
