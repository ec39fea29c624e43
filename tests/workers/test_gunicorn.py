"""``gunicorn -k nea.workers.NeaWorker`` on a real socket: budgets, NEA_* variables, the
memory plan of each worker, a graceful reload on HUP, a graceful stop on TERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.helpers import NeaProcess, get

pytest.importorskip("gunicorn")

SERVING_APPS = Path(__file__).resolve().parents[1] / "serving"


class GunicornProcess(NeaProcess):
    """A ``gunicorn`` child process with its output lines in a queue (NeaProcess's reader)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        super().__init__([], env=env)

    def _command(self, args: object) -> list[str]:
        return [sys.executable, "-m", "gunicorn", *self.args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn() -> Iterator[list[NeaProcess]]:
    started: list[NeaProcess] = []
    yield started
    for process in started:
        process.close()


def test_gunicorn_worker_serves_with_budgets_and_reloads_on_hup(
    gunicorn: list[NeaProcess],
) -> None:
    port = free_port()
    process = GunicornProcess(
        [
            "-k", "nea.workers.NeaWorker", "--chdir", str(SERVING_APPS), "-w", "2",
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "apps:hog_app",
        ],
        env={"NEA_BUDGET": "8MiB", "NEA_SLOTS": "4", "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    gunicorn.append(process)
    for _ in range(2):
        process.wait_for_line(r"memory plan: 4 slots × 8\.0 MiB = 32\.0 MiB \+ baseline")
        process.wait_for_line(r"nea running on")
    address = ("127.0.0.1", port)
    assert get(address, "/alloc/2")[0] == 200
    assert get(address, "/alloc/64")[0] == 500  # over the 8 MiB budget from NEA_BUDGET
    process.wait_for_line(r"out of memory: GET /alloc/64 exceeded its budget of 8\.0 MiB")

    process.send_signal(signal.SIGHUP)
    process.wait_for_line(r"Hang up: Master")
    for _ in range(2):
        process.wait_for_line(r"SIGTERM received: shutting down gracefully")
        process.wait_for_line(r"memory plan: 4 slots")
    assert get(address, "/alloc/2")[0] == 200

    process.send_signal(signal.SIGTERM)
    assert process.wait_exit() == 0
    process.wait_for_line(r"Shutting down: Master")


def test_bad_nea_variable_stops_gunicorn(gunicorn: list[NeaProcess]) -> None:
    process = GunicornProcess(
        [
            "-k", "nea.workers.NeaWorker", "--chdir", str(SERVING_APPS),
            "-b", f"127.0.0.1:{free_port()}", "apps:hog_app",
        ],
        env={"NEA_BUDGET": "lots", "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    gunicorn.append(process)
    process.wait_for_line(r"could not start: --budget \(from NEA_BUDGET\): expected a size")
    assert process.wait_exit() != 0


def test_gunicorn_is_not_needed_to_import_nea() -> None:
    code = "import sys, nea, nea.cli; print('gunicorn' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
