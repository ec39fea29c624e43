"""The trip corpus: real libraries pushed past a request's budget on a real server.

Each case runs a server in its own process (nea's, or uvicorn with
``MemoryBudgetMiddleware``) with deadlines on everything: the tripped request gets its
``500 Out of Memory`` (or, after the response started, an aborted connection), a
neighbour request is served meanwhile, the process is still serving afterwards, and
SIGTERM still stops it. Returning NULL to these libraries crashed (orjson), panicked
(pydantic-core) or froze (CPython's unwind, Django's debug page) the whole process.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.helpers import NeaProcess, get

pytest.importorskip("orjson")
pytest.importorskip("msgpack")
pytest.importorskip("django")
pytest.importorskip("numpy")
pytest.importorskip("PIL")
pytest.importorskip("lxml")

HERE = Path(__file__).resolve().parent
DEADLINE = 60.0
OOM = b"Internal Server Error: Out of Memory"

LIBRARY_CASES = [
    "numpy",
    "pillow",
    "lxml",
    "sqlite",
    "thread-sqlite",
    "executor",
    "orjson-dumps",
    "orjson-loads",
    "pydantic-dump-json",
    "pydantic-model-dump-json",
    "msgpack",
    "json",
    "zlib",
    "swallow",
]
# (app, tripping path, neighbour path, budget)
CASES = [
    *(("app", f"/{name}", "/ok", "4MiB") for name in LIBRARY_CASES),
    ("fastapi_app", "/model", "/ok", "4MiB"),
    ("fastapi_app", "/sync", "/ok", "8MiB"),
    ("django_app", "/rows", "/ok", "2MiB"),
]


def _fetch_raw(address: tuple[str, int], path: str, out: list[bytes]) -> None:
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            chunks.append(b"<reset>")
    out.append(b"".join(chunks))


def _trip_with_neighbour(address: tuple[str, int], path: str, neighbour: str) -> bytes:
    """Send the tripping request and, while it runs, a neighbour; return the tripped
    response and check the neighbour's."""
    out: list[bytes] = []
    tripping = threading.Thread(target=_fetch_raw, args=(address, path, out), daemon=True)
    tripping.start()
    status, _ = get(address, neighbour)
    assert status == 200
    tripping.join(DEADLINE)
    assert not tripping.is_alive(), "the tripped request got no answer in time"
    return out[0]


def _assert_out_of_memory(raw: bytes) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 "), raw[:200]
    assert body == OOM


@pytest.mark.parametrize(("app", "path", "neighbour", "budget"), CASES)
def test_a_trip_in_a_library_answers_500_and_the_server_carries_on(
    app: str, path: str, neighbour: str, budget: str
) -> None:
    server = NeaProcess(
        [
            "--app-dir",
            str(HERE),
            f"corpus_apps:{app}",
            "--port",
            "0",
            "--budget",
            budget,
            "--slots",
            "4",
        ]
    )
    try:
        address = server.wait_running()
        _assert_out_of_memory(_trip_with_neighbour(address, path, neighbour))
        assert get(address, neighbour)[0] == 200  # still serving
        warning = server.wait_for_line(r"out of memory: GET " + re.escape(path))
        assert "crossed it" in warning.string
        server.send_signal(signal.SIGTERM)
        assert server.wait_exit(DEADLINE) == 0
    finally:
        server.close()


def test_a_trip_after_the_response_started_aborts_the_connection() -> None:
    server = NeaProcess(
        ["--app-dir", str(HERE), "corpus_apps:app", "--port", "0", "--budget", "4MiB"]
    )
    try:
        address = server.wait_running()
        raw = _trip_with_neighbour(address, "/stream", "/ok")
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert not raw.endswith(b"0\r\n\r\n")  # never a complete chunked body
        server.wait_for_line(r"out of memory: GET /stream")
        server.wait_for_line(r'"GET /stream HTTP/1.1" 200 .*aborted')
        server.send_signal(signal.SIGTERM)
        assert server.wait_exit(DEADLINE) == 0
    finally:
        server.close()


UVICORN_APP = """
from corpus_apps import app as inner
from nea.middleware import MemoryBudgetMiddleware

app = MemoryBudgetMiddleware(inner, budget="4MiB", slots=8)
"""


@contextlib.contextmanager
def _uvicorn(tmp_path: Path) -> Iterator[tuple[tuple[str, int], subprocess.Popen[str]]]:
    """uvicorn serving the corpus app wrapped in the middleware; killed if still running."""
    pytest.importorskip("uvicorn")
    (tmp_path / "wrapped.py").write_text(UVICORN_APP)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "wrapped:app", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--app-dir", str(tmp_path), "--log-level", "warning"],
        env={"PYTHONPATH": str(HERE), "PATH": ""},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = ("127.0.0.1", port)
        _wait_listening(address, process)
        yield address, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize("name", ["orjson-dumps", "pydantic-dump-json", "swallow"])
def test_the_same_under_uvicorn_with_the_middleware(name: str, tmp_path: Path) -> None:
    with _uvicorn(tmp_path) as (address, process):
        _assert_out_of_memory(_trip_with_neighbour(address, f"/{name}", "/ok"))
        assert get(address, "/ok")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) in (0, -signal.SIGTERM)  # uvicorn re-raises it


def test_a_worker_thread_in_a_c_library_is_stopped_under_uvicorn_too(tmp_path: Path) -> None:
    """sqlite in ``to_thread`` under uvicorn with the middleware: the middleware has worker
    threads wake the server's loop, so the trip reaches the thread between statements,
    within a batch or two, not when the loop next wakes by itself (uvicorn: 0.1 s, 4-5 MiB
    of rows later here)."""
    with _uvicorn(tmp_path) as (address, process):
        out: list[bytes] = []
        _fetch_raw(address, "/thread-sqlite", out)  # alone: nothing else wakes the loop
        _assert_out_of_memory(out[0])
        process.send_signal(signal.SIGTERM)
        process.wait(DEADLINE)
        assert process.stderr is not None
        log = process.stderr.read()
    match = re.search(r"out of memory: GET /thread-sqlite .*\(peak ([0-9.]+) MiB\)", log)
    assert match is not None, log[-2000:]
    assert float(match.group(1)) < 4 + 2, match.group(0)  # 4 MiB and a batch or two of slack


def _wait_listening(address: tuple[str, int], process: subprocess.Popen[str]) -> None:
    """uvicorn prints nothing at --log-level warning: connect until it accepts (bounded)."""
    import time

    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert process.poll() is None, "uvicorn exited"
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail("uvicorn did not start listening in time")
