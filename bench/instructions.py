"""CPU instructions per request, server side, counted by valgrind's callgrind.

Throughput on a shared 2-CPU machine moves by 25 % between runs; the metering targets of
issues #3 and #6 are a few percent. Instruction counts are deterministic to a fraction of a
percent, so this script counts them instead: each server runs under callgrind, first with
``N`` and then (concurrently, on another port) with ``2N`` sequential keep-alive ``GET``
requests from one client connection, and ``(count(2N) - count(N)) / N`` is the cost of one
request in the steady state (what both runs share, shutdown included, cancels out).
Instrumentation is switched on (``callgrind_control -i on``) only after the server has
answered 20 warm-up requests on another connection, so start-up runs at valgrind's
uninstrumented speed and the first requests' one-off work is not counted. Repeated runs
of nea agree to within 0.5 % (hello) and, without libc's memory copies (see below), 0.1 %
(json): how the client's requests fall into the server's event-loop iterations still varies
a little with the machine's load.
uvicorn's hello numbers move by about 3 %: its main loop wakes every 100 ms, work that
grows with wall time, and a hello request under callgrind takes milliseconds.

Rows (apps from bench/_apps.py, the ones bench/region.py and bench/meter.py serve):
``hello`` (raw ASGI, 13 bytes), ``text`` (Starlette ``PlainTextResponse``, 13 bytes),
``json`` (Starlette ``JSONResponse``, ~18 KB) and ``echo`` (Starlette, a 64 KiB ``POST``
body read with ``request.body()`` and sent back).
Columns: nea ``--meter off`` (the baseline of the nea columns), nea with budgets on the
block table (``--region off``), nea's defaults (budgets + region); uvicorn serving the
plain app (the baseline of the uvicorn columns) and the app wrapped in ``BudgetPerRequest``
(a ``nea.budget`` entered around every request, as bench/meter.py measures). nea runs with
``--budget 16MiB --slots 16``, both servers with uvloop and httptools. Every response must
be a ``200``, or the script stops.

What it counts: instructions the server process executes per request, its own and the
kernel's excluded. Not wall time, cache misses, branch mispredictions or system calls; an
optimisation that removes instructions but adds cache misses looks better here than it is.
The last two columns leave out glibc's ``memcpy``/``memmove``/``memset``: they choose
``rep movsb`` or a vector loop from the buffers' alignment, and callgrind counts every step
of ``rep movsb`` as an instruction, so the same copies of a JSON body count up to 1 %
differently from one heap layout (one run) to the next. Without them, repeated runs agree
far more closely.

Under concurrency the same instructions cost more: with ``--connections K`` the requests
come from K client connections at once (each sends its share, one after the other), so the
server answers bursts of requests together as under ``wrk -c64``, and ``--cache-sim`` has
callgrind simulate the caches (the machine's sizes) and adds the data-cache misses per
request (D1: first level, LL: last level) -- counted deterministically, unlike the time they
cost.

    python bench/instructions.py                      # every row and column, a few minutes
    python bench/instructions.py --only json,nea-off,nea-defaults --requests 200
    python bench/instructions.py --only nea-off,nea-defaults --connections 64 --cache-sim

Needs valgrind (with callgrind_control) and nea's C extension. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from _common import (
    HOST,
    NEA_SLOTS,
    free_port,
    nea_command,
    uvicorn_command,
    wait_until_listening,
)

STARTUP_TIMEOUT_S = 180  # imports under valgrind, uninstrumented, on a busy machine
RESPONSE_TIMEOUT_S = 60  # one request under callgrind takes well under a second
SHUTDOWN_TIMEOUT_S = 120
# Valgrind maps the program at low addresses, where they depend on what else was mapped:
# without the region, objects sat below 1 GiB, so every ``id()`` was a one-digit int, cheap
# to make and hash; the region's mapping moved them above it, and the JSON encoder's
# circular-reference check (an ``id()`` per container) cost 1.8 % more instructions in every
# budgeted run. Natively both sit near 2**47. Starting valgrind's mappings at 4 GiB gives
# every column the native kind of address.
ASPACE = ["--aspace-minaddr=0x100000000"]
WARMUP_REQUESTS = 20  # graceful shutdown plus callgrind writing its profile


@dataclasses.dataclass(frozen=True)
class Row:
    nea_app: str
    nea_path: str
    uvicorn_plain: str
    uvicorn_metered: str
    uvicorn_path: str
    requests: int  # default N: the whole run should take a few minutes
    body: int = 0  # bytes POSTed with every request (0: GET)


@dataclasses.dataclass(frozen=True)
class Column:
    label: str
    server: str  # "nea" or "uvicorn"
    nea_args: tuple[str, ...] = ()
    metered: bool = False  # uvicorn: serve the BudgetPerRequest-wrapped app
    baseline: str | None = None  # the column this one is compared with


ROWS = {
    "hello": Row("_apps:hello", "/", "_apps:hello", "_apps:metered_hello", "/", 2000),
    "text": Row("_apps:app", "/text", "_apps:plain_text", "_apps:metered_text", "/", 1000),
    "json": Row("_apps:app", "/json", "_apps:plain", "_apps:metered", "/", 100),
    "echo": Row("_apps:app", "/echo", "_apps:plain_echo", "_apps:metered_echo", "/", 200, 65536),
}
COLUMNS = {
    "nea-off": Column("nea --meter off", "nea", ("--meter", "off")),
    "nea-table": Column(
        "nea budgets, table (--region off)", "nea", ("--region", "off"), False, "nea-off"
    ),
    "nea-defaults": Column("nea defaults (budgets + region)", "nea", (), False, "nea-off"),
    "uvicorn-plain": Column("uvicorn, plain app", "uvicorn"),
    "uvicorn-budget": Column("uvicorn, BudgetPerRequest", "uvicorn", (), True, "uvicorn-plain"),
}


class BenchError(Exception):
    """A run that cannot give a number; its message is the one line the user sees."""


# Every server process this script started and has not yet reaped, so that any exit path
# (an error in another run, Ctrl-C, SIGTERM) can kill them; once _stopping is set (under the
# lock), a worker thread that has just started a server stops it instead of using it.
_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()
_stopping = threading.Event()


def _kill_all() -> None:
    with _live_lock:
        _stopping.set()
        procs = list(_live)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextmanager
def _server(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same str hashes in both runs
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out, env=env)
    with _live_lock:
        _live.add(proc)
        stopping = _stopping.is_set()
    try:
        if stopping:
            raise BenchError("stopped before this run began")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        with _live_lock:
            _live.discard(proc)


def _send_concurrently(port: int, path: str, n: int, connections: int, body: int = 0) -> None:
    """``n`` requests from ``connections`` keep-alive connections at once (each sends its
    share sequentially); each must be a 200."""
    if connections <= 1:
        _send_requests(port, path, n, body)
        return
    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    with ThreadPoolExecutor(max_workers=connections) as clients:
        for done in [clients.submit(_send_requests, port, path, k, body) for k in shares if k]:
            done.result()


def _send_requests(port: int, path: str, n: int, body: int = 0) -> None:
    """``n`` sequential requests on one keep-alive connection: ``GET``, or ``POST`` of
    ``body`` bytes when it is not 0; each must be a 200."""
    method = "POST" if body else "GET"
    payload = b"x" * body if body else None
    headers = {"content-type": "application/octet-stream"} if body else {}
    conn = http.client.HTTPConnection(HOST, port, timeout=RESPONSE_TIMEOUT_S)
    try:
        for i in range(n):
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise BenchError(
                    f"{method} {path} on port {port}: request {i + 1} got {response.status} "
                    f"{response.reason}, expected 200 (body {answer[:80]!r})"
                )
            if response.will_close:
                raise BenchError(f"{method} {path} on port {port}: the server closed keep-alive")
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{method} {path} on port {port}: {exc!r}") from exc
    finally:
        conn.close()


def _command(
    row: Row, column: Column, port: int, python: str, connections: int = 1
) -> tuple[list[str], str]:
    if column.server == "nea":
        # A slot for every connection, as nea's default 64 slots have under wrk -c64: no
        # request waits in admission's queue.
        slots = ("--slots", str(connections)) if connections > int(NEA_SLOTS) else ()
        command = nea_command(row.nea_app, port, *column.nea_args, *slots, python=python)
        return command, row.nea_path
    app = row.uvicorn_metered if column.metered else row.uvicorn_plain
    return uvicorn_command(app, port, python=python), row.uvicorn_path


@dataclasses.dataclass(frozen=True)
class Count:
    total: float  # instructions
    copies: float  # of which in libc's memcpy/memmove/memset (see the module's docstring)
    d1_misses: float = 0.0  # data reads and writes missing the first-level cache (--cache-sim)
    ll_misses: float = 0.0  # ... and missing the last-level cache too


@dataclasses.dataclass(frozen=True)
class Load:
    """How the requests are sent and what callgrind simulates."""

    connections: int = 1
    cache_sim: bool = False


_COPY_FUNCTION = re.compile(r"^\s*([\d,]+) .*:__mem(?:cpy|move|set)\w* ", re.MULTILINE)


def _copies(profile: Path) -> int:
    """Instructions spent in libc's memcpy/memmove/memset in a callgrind profile."""
    annotate = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", str(profile)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if annotate.returncode != 0:
        raise BenchError(f"callgrind_annotate failed on {profile}: {annotate.stderr.strip()}")
    return sum(int(m.group(1).replace(",", "")) for m in _COPY_FUNCTION.finditer(annotate.stdout))


def _misses(log: str, name: str) -> int:
    found = re.search(rf"{name} misses:\s+([\d,]+)", log)
    return 0 if found is None else int(found.group(1).replace(",", ""))


def count(row: str, col: str, python: str, n: int, out: Path, load: Load) -> Count:
    """Instructions callgrind collects while the server of a cell answers ``n`` requests and
    shuts down; the profile goes to ``out``, valgrind's messages to ``out`` + ``.log``."""
    port = free_port()  # here, not when the run is queued: the port stays free only briefly
    command, path = _command(ROWS[row], COLUMNS[col], port, python, load.connections)
    log = out.with_name(out.name + ".log")
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", *ASPACE]
    if load.cache_sim:
        valgrind.append("--cache-sim=yes")
    valgrind += [f"--callgrind-out-file={out}"]
    with _server([*valgrind, *command], log) as proc:
        what = f"{Path(command[0]).name} {' '.join(command[1:4])} under callgrind (log: {log})"
        try:
            wait_until_listening(proc, port, STARTUP_TIMEOUT_S, what)
        except SystemExit as exc:
            raise BenchError(str(exc)) from None
        # Listening is not ready: nea binds before it imports the app. Warm-up requests, on
        # their own connection, finish start-up and the first-request work before counting.
        _send_requests(port, path, WARMUP_REQUESTS, ROWS[row].body)
        on = subprocess.run(
            ["callgrind_control", "--instr=on", str(proc.pid)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if on.returncode != 0 or "OK" not in on.stdout:
            raise BenchError(f"callgrind_control could not switch instrumentation on: {on.stdout}")
        _send_concurrently(port, path, n, load.connections, ROWS[row].body)
        if proc.poll() is not None:  # e.g. it could not bind: someone else answered
            raise BenchError(f"{what} exited during the run, status {proc.returncode}")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} did not stop within {SHUTDOWN_TIMEOUT_S} s") from None
    text = log.read_text(errors="replace")
    found = re.search(r"Collected : (\d+)", text)
    if found is None:
        raise BenchError(f"no instruction count in {log} (exit status {proc.returncode})")
    return Count(int(found.group(1)), _copies(out), _misses(text, "D1 "), _misses(text, "LL"))


def measure(
    cells: list[tuple[str, str]],
    requests: dict[str, int],
    python: str,
    jobs: int,
    keep: Path | None,
    load: Load,
) -> dict[tuple[str, str], Count]:
    """Instructions per request of every (row, column) cell; ``jobs`` servers at a time.
    With ``keep``, the callgrind profiles stay there as ``callgrind.ROW.COLUMN.REQUESTS``."""
    results: dict[tuple[str, str], Count] = {}
    with tempfile.TemporaryDirectory(prefix="nea-instructions-") as tmp:
        outdir = keep or Path(tmp)
        pool = ThreadPoolExecutor(max_workers=jobs)
        futures: dict[tuple[str, str], tuple[Future[Count], Future[Count]]] = {}
        try:
            for row, col in cells:
                n = requests[row]
                runs = []
                for k in (n, 2 * n):  # submitted together: they run at the same time
                    out = outdir / f"callgrind.{row}.{col}.{k}"
                    runs.append(pool.submit(count, row, col, python, k, out, load))
                futures[row, col] = (runs[0], runs[1])
            for (row, col), (once, twice) in futures.items():
                first, second, n = once.result(), twice.result(), requests[row]
                results[row, col] = Count(
                    (second.total - first.total) / n,
                    (second.copies - first.copies) / n,
                    (second.d1_misses - first.d1_misses) / n,
                    (second.ll_misses - first.ll_misses) / n,
                )
                print(f"  measured {row:5} {COLUMNS[col].label}", file=sys.stderr, flush=True)
        finally:
            for pair in futures.values():
                for future in pair:
                    future.cancel()
            _kill_all()
            pool.shutdown(wait=True)
    return results


def _select(only: str | None) -> tuple[list[str], list[str]]:
    if not only:
        return list(ROWS), list(COLUMNS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS and name not in COLUMNS]
    if unknown:
        raise BenchError(
            f"--only: unknown {', '.join(unknown)}; rows are {', '.join(ROWS)}, "
            f"columns are {', '.join(COLUMNS)}"
        )
    rows = [name for name in ROWS if name in names] or list(ROWS)
    cols = [name for name in COLUMNS if name in names] or list(COLUMNS)
    return rows, cols


def _preflight(python: str) -> str:
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not on PATH: install valgrind (apt-get install valgrind)")
    probe = subprocess.run(
        [python, "-c", "import sys, nea.meter; print(sys.version.split()[0], nea.meter.backend())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"{python} cannot import nea ({last}); run make setup or pass --python")
    version, backend = probe.stdout.split()
    if backend != "native":
        raise BenchError(f"{python}: nea's meter is {backend!r}, not native; build the extension")
    return version


def report(results: dict[tuple[str, str], Count], cache_sim: bool = False) -> None:
    misses = f" {'D1 misses':>10} {'vs baseline':>12} {'LL misses':>10}" if cache_sim else ""
    print(
        f"{'row':6} {'server':36} {'instructions/request':>21} {'vs baseline':>12}"
        f" {'without mem*':>13} {'vs baseline':>12}{misses}"
    )
    for row in ROWS:
        for col, column in COLUMNS.items():
            if (row, col) not in results:
                continue
            value = results[row, col]
            base = results.get((row, column.baseline)) if column.baseline else None
            rest = value.total - value.copies
            base_total = None if base is None else base.total
            base_rest = None if base is None else base.total - base.copies
            line = (
                f"{row:6} {column.label:36} {value.total:21,.0f} "
                f"{_versus(value.total, base_total, column):>12} {rest:13,.0f} "
                f"{_versus(rest, base_rest, column):>12}"
            )
            if cache_sim:
                base_d1 = None if base is None else base.d1_misses
                line += (
                    f" {value.d1_misses:10,.0f} {_versus(value.d1_misses, base_d1, column):>12}"
                    f" {value.ll_misses:10,.0f}"
                )
            print(line)


def _versus(value: float, base: float | None, column: Column) -> str:
    if column.baseline is None:
        return "(baseline)"
    if not base:
        return "(no baseline)"
    return f"{value / base - 1:+.1%}".replace("%", " %")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through measure(), which kills the servers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="N, requests in the first run of every cell (the second sends 2N); default "
        + ", ".join(f"{name} {row.requests}" for name, row in ROWS.items()),
    )
    parser.add_argument(
        "--only",
        help="comma-separated rows and/or columns to run (default all); rows: "
        f"{', '.join(ROWS)}; columns: {', '.join(COLUMNS)}",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the callgrind profiles in DIR (for callgrind_annotate); default: discard",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="servers under callgrind at once (default 2)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="client connections sending at once (default 1; 64 is wrk -c64's load)",
    )
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="simulate the caches (callgrind --cache-sim=yes): data-cache misses per request",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.requests is not None and args.requests < 1:
            raise BenchError(f"--requests must be at least 1, got {args.requests}")
        if args.connections < 1:
            raise BenchError(f"--connections must be at least 1, got {args.connections}")
        rows, cols = _select(args.only)
        version = _preflight(args.python)
        requests = {row: args.requests or ROWS[row].requests for row in rows}
        started = time.monotonic()
        load = Load(args.connections, args.cache_sim)
        print(
            f"python {version}; callgrind, server side, N vs 2N keep-alive requests from "
            f"{args.connections} connection(s)"
            + (", caches simulated" if args.cache_sim else "")
            + ": "
            + ", ".join(f"{row} N={n}" for row, n in requests.items()),
            flush=True,
        )
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        cells = [(r, c) for r in rows for c in cols]
        results = measure(cells, requests, args.python, args.jobs, args.keep, load)
        report(results, args.cache_sim)
        print(f"({time.monotonic() - started:.0f} s)")
    except BenchError as exc:
        raise SystemExit(f"bench/instructions.py: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("bench/instructions.py: interrupted; its servers are stopped") from None


if __name__ == "__main__":
    main()
