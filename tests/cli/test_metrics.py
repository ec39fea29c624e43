"""``--metrics HOST:PORT`` on real processes: the Prometheus text at ``/metrics``, added up
over ``--workers``."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .helpers import WAIT_SECONDS, NeaProcess, get

pytest.importorskip("prometheus_client")

StartNea = Callable[..., NeaProcess]
SERVING_APPS = Path(__file__).resolve().parents[1] / "serving"


def scrape(port: int) -> dict[str, float]:
    status, body = get(("127.0.0.1", port), "/metrics")
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def scrape_until(port: int, name: str, expected: float) -> dict[str, float]:
    """Scrape until ``name`` reaches ``expected``: each process copies its counters into the
    metric files once a second (nea.metrics.SAMPLE_SECONDS), with no signal to wait on."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        values = scrape(port)
        if values.get(name) == expected or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


def test_metrics_cover_every_worker(start_nea: StartNea) -> None:
    nea = start_nea(
        "--app-dir", str(SERVING_APPS), "apps:hog_app", "--port", "0", "--workers", "2",
        "--budget", "8MiB", "--slots", "3", "--metrics", "127.0.0.1:0",
    )  # fmt: skip
    metrics_port = int(nea.wait_for_line(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    port = int(nea.wait_for_line(r"starting 2 workers on http://127\.0\.0\.1:(\d+)").group(1))
    for _ in range(2):
        nea.wait_for_line(r"nea running on")
    assert get(("127.0.0.1", port), "/alloc/2")[0] == 200
    assert get(("127.0.0.1", port), "/alloc/64")[0] == 500

    values = scrape_until(metrics_port, "nea_requests_served_total", 2.0)
    assert values["nea_requests_served_total"] == 2.0
    assert values["nea_requests_tripped_total"] == 1.0
    assert values["nea_requests_rejected_total"] == 0.0
    assert values["nea_slots"] == 6.0  # 3 slots in each of 2 workers
    assert values["nea_slots_busy"] == 0.0
    assert values["nea_queue_waiting"] == 0.0
    # 3 request slots and the WebSocket pool (100 × 8 MiB by default) in each of 2 workers.
    assert values["nea_memory_budgets_bytes"] == 2 * (3 + 100) * 8 * 1024 * 1024
    assert values["nea_memory_plan_bytes"] > values["nea_memory_budgets_bytes"]
    assert values["nea_request_peak_memory_bytes_count"] == 2.0
    # The 2 MiB request lands at or under the 4 MiB bucket; the tripped one above 4 MiB.
    assert values['nea_request_peak_memory_bytes_bucket{le="4.194304e+06"}'] == 1.0
    assert "nea_region_bytes_in_use" in values

    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0


def test_metrics_option_needs_host_and_port() -> None:
    from .helpers import run_nea

    result = run_nea("m:app", "--metrics", "9100")
    assert result.returncode == 1
    assert re.fullmatch(
        r"nea: error: --metrics: expected HOST:PORT \(e\.g\. 127\.0\.0\.1:9100\), got '9100'\n",
        result.stderr,
    )


def test_metrics_of_a_single_process(start_nea: StartNea) -> None:
    nea = start_nea(
        "--app-dir", str(SERVING_APPS), "apps:hog_app", "--port", "0", "--slots", "5",
        "--metrics", "127.0.0.1:0",
    )  # fmt: skip
    metrics_port = int(nea.wait_for_line(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    address = nea.wait_running()
    assert get(address, "/alloc/1")[0] == 200
    values = scrape_until(metrics_port, "nea_requests_served_total", 1.0)
    assert (values["nea_requests_served_total"], values["nea_slots"]) == (1.0, 5.0)
    assert values["nea_request_peak_memory_bytes_count"] == 1.0
    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0
