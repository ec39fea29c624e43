"""Noisy neighbour: small requests under load while hog requests try to take all memory.

Serves ``bench/noisy_app.py`` with nea and with uvicorn, one after the other in the same
run, each capped to the same total memory, and drives each with the same traffic:

- 32 neighbour clients loop on ``GET /small`` (about 100 KB allocated, 10 ms await);
- one ``GET /hog`` per second, growing towards 2 GiB in 1 MiB steps.

It prints, per server: neighbour success %, neighbour p50/p99 latency, hog outcomes
(status counts and the median time from start to failure), the server's peak RSS,
and whether the server is still alive at the end; then a side-by-side table.

The memory cap is nea's plan, ``slots × budget + baseline``. nea enforces it itself
(``--memory-limit``); uvicorn gets the same number as ``RLIMIT_DATA`` through
``preexec_fn``. RLIMIT_DATA, not RLIMIT_AS: RLIMIT_AS counts address space that is
reserved but never used (glibc reserves 64 MiB per malloc arena, thread stacks, shared
libraries), so a cap near the real working set refuses thread creation and imports long
before the heap is full. RLIMIT_DATA counts private writable memory (heap, anonymous
mmaps, thread stacks once used): what the hog's bytearrays take.

    python bench/noisy_neighbour.py                       # both servers, 20 s each
    python bench/noisy_neighbour.py --servers uvicorn --duration 3

All traffic goes to 127.0.0.1; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
OUT_OF_MEMORY = "Internal Server Error: Out of Memory"
MIB = 1024 * 1024
# The process before any request: uvicorn serving noisy_app idles at 30 MiB RSS and
# 50 MiB VmData (measured, CPython 3.11, uvloop). 96 MiB leaves room for connection
# buffers and the allocator's slack under load; nea prints its own measured baseline.
DEFAULT_BASELINE = "96MiB"
READY_TIMEOUT_SECONDS = 30.0
# A hog that has not finished by then has hung the server for the others; count it so.
HOG_TIMEOUT_SECONDS = 60.0
NEIGHBOUR_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
RSS_SAMPLE_SECONDS = 0.02


@dataclass
class Result:
    server: str
    neighbour_ok: int = 0
    neighbour_failures: Counter[str] = field(default_factory=Counter)
    # Seconds, of the successful neighbour requests.
    neighbour_p50: float | None = None
    neighbour_p99: float | None = None
    hog_outcomes: Counter[str] = field(default_factory=Counter)
    hog_failure_seconds: list[float] = field(default_factory=list)
    peak_rss_bytes: int = 0
    alive: bool = False
    exit_note: str = ""
    plan_lines: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)

    @property
    def neighbour_total(self) -> int:
        return self.neighbour_ok + sum(self.neighbour_failures.values())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="nea,uvicorn", help="comma-separated: nea,uvicorn")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per server")
    parser.add_argument("--clients", type=int, default=32, help="concurrent neighbour clients")
    parser.add_argument("--hog-interval", type=float, default=1.0, help="seconds between hogs")
    parser.add_argument(
        "--client",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="what drives the neighbours (default: wrk when installed)",
    )
    parser.add_argument("--slots", type=int, default=64, help="nea --slots")
    parser.add_argument("--budget", default="4MiB", help="nea --budget (per request)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="added to slots × budget")
    parser.add_argument(
        "--memory-limit", default=None, help="total cap for both servers (default: the plan)"
    )
    return parser.parse_args(argv)


def parse_size(text: str) -> int:
    from nea import parse_size as nea_parse_size

    return nea_parse_size(text)


def format_mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


# --- the server process -------------------------------------------------------------


def server_command(name: str, fd: int, args: argparse.Namespace, cap: int) -> list[str]:
    common = ["--app-dir", str(BENCH_DIR), "noisy_app:app", "--fd", str(fd), "--no-access-log"]
    if name == "uvicorn":
        return [sys.executable, "-m", "uvicorn", *common, "--log-level", "warning"]
    return [
        *[sys.executable, "-m", "nea", *common, "--log-level", "info"],
        *["--slots", str(args.slots), "--budget", args.budget, "--memory-limit", str(cap)],
    ]


def cap_data(cap: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    return preexec


@contextlib.contextmanager
def running_server(
    name: str, args: argparse.Namespace, cap: int, log_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``name`` on a socket bound here (clients may connect at once); stop it after.

    The parent closes its copy of the socket once the server has it, so if the server dies
    clients get a refused connection at once instead of waiting in the backlog.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as sock, log_path.open("wb") as log:
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            server_command(name, sock.fileno(), args, cap),
            pass_fds=(sock.fileno(),),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=cap_data(cap) if name == "uvicorn" else None,
        )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def read_status_kib(pid: int, key: str) -> int:
    """``key`` (VmRSS, VmHWM) from /proc/PID/status in bytes; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (nea or uvicorn may serve from a child process)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                pids.extend(int(child) for child in children.read().split())
    return pids


async def sample_peak_rss(pid: int, result: Result, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for member in process_tree(pid):
            rss = max(read_status_kib(member, "VmRSS"), read_status_kib(member, "VmHWM"))
            result.peak_rss_bytes = max(result.peak_rss_bytes, rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_SECONDS)


# --- the traffic --------------------------------------------------------------------


async def neighbours_httpx(base_url: str, deadline: float, clients: int, result: Result) -> None:
    """The neighbours from Python: portable, but httpx tops out near 200-300 req/s here."""
    latencies: list[float] = []

    async def loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = await client.get("/small", timeout=NEIGHBOUR_TIMEOUT_SECONDS)
            except httpx.HTTPError as error:
                result.neighbour_failures[type(error).__name__] += 1
                continue
            if response.status_code == 200 and response.content == b"ok":
                latencies.append(time.monotonic() - started)
            else:
                result.neighbour_failures[f"HTTP {response.status_code}"] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        await asyncio.gather(*(loop(client) for _ in range(clients)))
    result.neighbour_ok = len(latencies)
    if latencies:
        result.neighbour_p50 = percentile(latencies, 0.50)
        result.neighbour_p99 = percentile(latencies, 0.99)


async def neighbours_wrk(base_url: str, duration: float, clients: int, result: Result) -> None:
    """The neighbours from wrk: one C thread keeps 32 connections busy at full speed."""
    process = await asyncio.create_subprocess_exec(
        *["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--latency"],
        *[f"--timeout={NEIGHBOUR_TIMEOUT_SECONDS:g}s", base_url + "/small"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    parse_wrk(output.decode(errors="replace"), result)


def parse_wrk(output: str, result: Result) -> None:
    """Fill the neighbour fields from wrk's report (requests, errors, latency percentiles)."""
    requests = re.search(r"(\d+) requests in", output)
    if requests is None:
        result.neighbour_failures["wrk failed: " + output.strip()[-80:]] += 1
        return
    # wrk's count is of completed responses, non-2xx included; socket errors come on top.
    completed = int(requests.group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed_responses = int(non_2xx.group(1)) if non_2xx else 0
    if failed_responses:
        result.neighbour_failures["HTTP non-2xx"] += failed_responses
    result.neighbour_ok = completed - failed_responses
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        for kind, count in zip(
            ("connect", "read", "write", "timeout"), errors.groups(), strict=True
        ):
            if int(count):
                result.neighbour_failures[f"socket {kind} error"] += int(count)
    for label, attribute in (("50%", "neighbour_p50"), ("99%", "neighbour_p99")):
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if found:
            scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[found.group(2)]
            setattr(result, attribute, float(found.group(1)) * scale)


def classify_hog(response: httpx.Response) -> str:
    if response.status_code == 500 and response.text == OUT_OF_MEMORY:
        return "500 Out of Memory"
    return f"{response.status_code} {response.text[:40]!r}"


async def one_hog(client: httpx.AsyncClient, result: Result) -> None:
    started = time.monotonic()
    try:
        response = await client.get("/hog", timeout=HOG_TIMEOUT_SECONDS)
        outcome = classify_hog(response)
        failed = response.status_code != 200
    except httpx.HTTPError as error:
        outcome, failed = f"error {type(error).__name__}", True
    result.hog_outcomes[outcome] += 1
    if failed:
        result.hog_failure_seconds.append(time.monotonic() - started)


async def hogs(base_url: str, deadline: float, interval: float, result: Result) -> None:
    async with httpx.AsyncClient(
        base_url=base_url, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        tasks: list[asyncio.Task[None]] = []
        while time.monotonic() < deadline:
            tasks.append(asyncio.create_task(one_hog(client, result)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.sleep(interval), deadline - time.monotonic())
        await asyncio.gather(*tasks)


async def still_alive(process: subprocess.Popen[bytes], base_url: str) -> bool:
    if process.poll() is not None:
        return False
    async with httpx.AsyncClient(base_url=base_url) as client:
        try:
            response = await client.get("/small", timeout=NEIGHBOUR_TIMEOUT_SECONDS)
        except httpx.HTTPError:
            return False
    return response.status_code == 200


async def drive(
    process: subprocess.Popen[bytes], port: int, args: argparse.Namespace, result: Result
) -> None:
    base_url = f"http://127.0.0.1:{port}"
    if not await still_alive(process, base_url):
        result.exit_note = f"did not start (exit code {process.poll()})"
        return
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_peak_rss(process.pid, result, stop_sampling))
    deadline = time.monotonic() + args.duration
    if args.client == "wrk":
        neighbours = neighbours_wrk(base_url, args.duration, args.clients, result)
    else:
        neighbours = neighbours_httpx(base_url, deadline, args.clients, result)
    await asyncio.gather(neighbours, hogs(base_url, deadline, args.hog_interval, result))
    result.alive = await still_alive(process, base_url)
    stop_sampling.set()
    await sampler
    if process.poll() is not None:
        result.exit_note = f"exited with code {process.returncode}"


def run_one(name: str, args: argparse.Namespace, cap: int, log_dir: Path) -> Result:
    result = Result(name)
    log_path = log_dir / f"{name}.log"
    with running_server(name, args, cap, log_path) as (process, port):
        asyncio.run(drive(process, port, args, result))
    log = log_path.read_text(errors="replace").splitlines()
    result.plan_lines = [
        line.strip() for line in log if "memory plan:" in line or "memory limit:" in line
    ]
    if not result.alive:
        result.log_tail = log[-5:]
    return result


# --- the report ---------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def format_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f} ms"


def summary(result: Result, cap: int) -> dict[str, str]:
    total = result.neighbour_total
    ok = result.neighbour_ok
    hogs_sent = sum(result.hog_outcomes.values())
    failures = ", ".join(f"{n}× {kind}" for kind, n in result.neighbour_failures.most_common())
    outcomes = ", ".join(f"{n}× {kind}" for kind, n in result.hog_outcomes.most_common())
    return {
        "neighbour requests": str(total),
        "neighbour success": f"{100 * ok / total:.2f} %" if total else "-",
        "neighbour failures": failures or "none",
        "neighbour p50 latency": format_ms(result.neighbour_p50),
        "neighbour p99 latency": format_ms(result.neighbour_p99),
        "hogs sent": str(hogs_sent),
        "hog outcomes": outcomes or "-",
        "hog start→failure (median)": (
            f"{1000 * statistics.median(result.hog_failure_seconds):.0f} ms"
            if result.hog_failure_seconds
            else "-"
        ),
        "peak RSS": format_mib(result.peak_rss_bytes),
        "memory cap": format_mib(cap),
        "peak RSS within cap": (
            "-" if not result.peak_rss_bytes else "yes" if result.peak_rss_bytes <= cap else "NO"
        ),
        "alive at end": ("yes" if result.alive else "NO")
        + (f" ({result.exit_note})" if result.exit_note else ""),
    }


def print_table(results: list[Result], cap: int) -> None:
    rows = [summary(result, cap) for result in results]
    labels = list(rows[0])
    label_width = max(len(label) for label in labels)
    widths = [
        max(len(result.server), *(len(row[label]) for label in labels))
        for result, row in zip(results, rows, strict=True)
    ]
    header = (
        " " * label_width
        + " | "
        + " | ".join(r.server.ljust(w) for r, w in zip(results, widths, strict=True))
    )
    print(header)
    print("-" * len(header))
    for label in labels:
        cells = " | ".join(row[label].ljust(w) for row, w in zip(rows, widths, strict=True))
        print(f"{label.ljust(label_width)} | {cells}")


def describe_machine() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    packages = ", ".join(installed(name) for name in ("nea", "uvicorn", "uvloop", "httptools"))
    return (
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {packages}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(servers) - {"nea", "uvicorn"}
    if unknown or not servers:
        print(f"--servers: expected names from nea,uvicorn, got {args.servers!r}", file=sys.stderr)
        return 2
    plan = args.slots * parse_size(args.budget) + parse_size(args.baseline)
    cap = parse_size(args.memory_limit) if args.memory_limit else plan
    print(
        f"noisy neighbour: {args.clients} clients on /small, "
        f"one /hog every {args.hog_interval:g} s, "
        f"{args.duration:g} s per server; plan {args.slots} slots × {args.budget} + "
        f"{args.baseline} baseline = {format_mib(plan)}; cap {format_mib(cap)} "
        "(nea: --memory-limit, uvicorn: RLIMIT_DATA)"
    )
    print(describe_machine())
    results = []
    with tempfile.TemporaryDirectory(prefix="nea-noisy-") as log_dir:
        for name in servers:
            print(f"\n== {name}", flush=True)
            result = run_one(name, args, cap, Path(log_dir))
            for line in result.plan_lines:
                print(f"   {line}")
            for label, value in summary(result, cap).items():
                print(f"   {label}: {value}")
            for line in result.log_tail:
                print(f"   log: {line}")
            results.append(result)
    print()
    print_table(results, cap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
