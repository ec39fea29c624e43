"""``nea --workers 2`` on a real socket: both workers serve, a dead one is replaced, SIGTERM
stops everything cleanly.

"Both serve" is shown without relying on the kernel's accept distribution: while one worker
is stopped with SIGSTOP, every connection on the shared socket must be served by the other.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .helpers import APPS_DIR, NeaProcess, get, run_nea

StartNea = Callable[..., NeaProcess]


@contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def served_by(address: tuple[str, int]) -> int:
    status, body = get(address)
    assert status == 200
    return int(body)


def test_two_workers_serve_restart_and_stop(start_nea: StartNea) -> None:
    nea = start_nea(
        "nea_test_apps:pid_app", "--app-dir", str(APPS_DIR), "--port", "0", "--workers", "2"
    )
    match = nea.wait_for_line(r"starting 2 workers on http://127\.0\.0\.1:(\d+)")
    address = ("127.0.0.1", int(match.group(1)))
    pids = [int(nea.wait_for_line(r"started worker pid (\d+)").group(1)) for _ in range(2)]
    for _ in pids:
        nea.wait_for_line(rf"nea running on http://127\.0\.0\.1:{address[1]}")

    first, second = pids
    with paused(first):
        assert served_by(address) == second
    with paused(second):
        assert served_by(address) == first

    os.kill(first, signal.SIGKILL)
    nea.wait_for_line(rf"worker pid {first} died unexpectedly \(exit code -9\); restarting it")
    replacement = int(nea.wait_for_line(r"started worker pid (\d+)").group(1))
    nea.wait_for_line(r"nea running on")
    assert replacement not in pids
    with paused(second):
        assert served_by(address) == replacement

    nea.send_signal(signal.SIGTERM)
    nea.wait_for_line(r"stopping 2 worker\(s\) gracefully")
    assert nea.wait_exit() == 0
    stopped = {int(m) for m in _all(nea, r"worker pid (\d+) stopped \(exit code 0\)")}
    assert stopped == {second, replacement}


def _all(nea: NeaProcess, pattern: str) -> list[str]:
    import re

    return [m.group(1) for _, line in nea.seen if (m := re.search(pattern, line))]


def test_worker_reaching_limit_max_requests_is_replaced(start_nea: StartNea) -> None:
    nea = start_nea(
        "nea_test_apps:pid_app", "--app-dir", str(APPS_DIR), "--port", "0",
        "--workers", "2", "--limit-max-requests", "1",
    )  # fmt: skip
    match = nea.wait_for_line(r"starting 2 workers on http://127\.0\.0\.1:(\d+)")
    for _ in range(2):
        nea.wait_for_line(r"nea running on")
    pid = served_by(("127.0.0.1", int(match.group(1))))
    nea.wait_for_line(rf"worker pid {pid} exited \(exit code 0\); starting a new one")
    nea.wait_for_line(r"nea running on")
    nea.send_signal(signal.SIGINT)
    assert nea.wait_exit() == 0


def test_workers_stop_when_the_supervisor_is_killed(start_nea: StartNea) -> None:
    nea = start_nea(
        "nea_test_apps:pid_app", "--app-dir", str(APPS_DIR), "--port", "0", "--workers", "2"
    )
    for _ in range(2):
        nea.wait_for_line(r"nea running on")
    nea.process.kill()  # SIGKILL: the supervisor cannot tell its workers anything
    for _ in range(2):
        nea.wait_for_line(r"the supervisor process is gone: shutting down gracefully")
    # The workers share the test's output pipes: both readers reaching EOF means every
    # process that could still write (the workers) has exited.
    assert nea.wait_exit() == -signal.SIGKILL


def test_app_that_cannot_be_imported_stops_the_supervisor() -> None:
    result = run_nea("no_such_module_for_nea:app", "--port", "0", "--workers", "2")
    assert result.returncode == 1, result.stderr
    last_line = result.stderr.splitlines()[-1]
    assert last_line.startswith("nea: error: "), result.stderr
    assert "no_such_module_for_nea" in last_line
    assert "Traceback" not in result.stderr
    assert "restarting" not in result.stderr
