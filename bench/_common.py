"""What the bench scripts share: server command lines, ports, start-up, CPU time from /proc.

The servers load their apps from ``bench/_apps.py`` (``--app-dir`` this directory). Everything
listens on 127.0.0.1 only. This module imports only the standard library (the bench scripts
import it as ``_common``: Python puts a script's directory first on ``sys.path``); it must not
import nea, so that a script can report a missing extension in its own words.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
# What bench/region.py has always served with: small enough for a quick start-up, larger
# than every request of the benches except the deliberate /hog.
NEA_BUDGET = "16MiB"
NEA_SLOTS = "16"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def nea_command(
    app: str, port: int, *extra: str, python: str = sys.executable, app_dir: Path = BENCH_DIR
) -> list[str]:
    """nea serving ``app`` (``module:attribute`` in ``app_dir``) with uvloop and httptools."""
    return [
        *(python, "-m", "nea", app, "--app-dir", str(app_dir), "--host", HOST, "--port"),
        *(str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        *("--log-level", "warning", "--budget", NEA_BUDGET, "--slots", NEA_SLOTS, *extra),
    ]


def uvicorn_command(
    app: str, port: int, python: str = sys.executable, app_dir: Path = BENCH_DIR
) -> list[str]:
    """uvicorn serving ``app`` with the same loop, parser and logging as ``nea_command``."""
    return [
        *(python, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--host", HOST, "--port"),
        *(str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        *("--log-level", "warning"),
    ]


def wait_until_listening(
    process: subprocess.Popen[bytes], port: int, timeout: float, what: str
) -> None:
    """Return once ``port`` accepts connections; raise SystemExit if ``process`` exits first
    or ``timeout`` seconds pass (the caller still owns, and must stop, ``process``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)  # polling a port that is not open yet: nothing to wait on
    raise SystemExit(f"{what} did not listen on {HOST}:{port} within {timeout:g} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time that process ``pid`` has used so far (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


PIN_HELP = (
    "CPU numbers for the servers and for wrk, e.g. 1,0 (default: the scheduler's choice; on a "
    "shared two-CPU machine it moves them about, and their caches with them)"
)


def parse_pin(value: str | None) -> tuple[int, int] | None:
    """``--pin SERVER,CLIENT`` as two CPU numbers this process may use; ``None`` unpinned.
    Raises ``ValueError`` with a one-line message otherwise."""
    if value is None:
        return None
    parts = value.split(",")
    available = os.sched_getaffinity(0)
    if len(parts) != 2 or not all(p.isdigit() and int(p) in available for p in parts):
        raise ValueError(
            f"--pin: expected SERVER,CLIENT CPU numbers from {sorted(available)}, got {value!r}"
        )
    return int(parts[0]), int(parts[1])


def on_cpu(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps the child on one CPU (``None``: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def parse_with_pin(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add ``--pin``, parse the command line, and set ``args.cpus`` (``parse_pin``'s answer);
    a bad ``--pin`` exits with the parser's one-line error."""
    parser.add_argument("--pin", metavar="SERVER,CLIENT", help=PIN_HELP)
    args = parser.parse_args()
    try:
        args.cpus = parse_pin(args.pin)
    except ValueError as exc:
        parser.error(str(exc))
    return args
