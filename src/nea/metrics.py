"""``--metrics HOST:PORT``: Prometheus metrics of the slots, the queue, the requests' memory
and the memory plan, served at ``/metrics`` on a listener of their own.

Owns: the metric names, prometheus_client's multiprocess mode (every serving process writes
its values to files in one directory, the process that serves ``/metrics`` adds them up, so
``--workers N`` is covered as one server), sampling a server's admission counters, and the
per-request peak histogram (an ASGI wrapper that observes the request budget's peak when the
app returns). Must not import the server at module level; prometheus_client is imported only
once ``PROMETHEUS_MULTIPROC_DIR`` is set (it reads the variable when its values are created).

Why sampling: the admission counters (``Admission.statistics()``) are plain integers of the
serving process with no change notification, so a timer copies them into the metric files
once per ``SAMPLE_SECONDS``; a scrape sees values at most that old.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nea._errors import ConfigError
from nea._logging import ERROR_LOGGER
from nea._types import ASGIApp, Receive, Scope, Send
from nea.config import Config, parse_host_port

if TYPE_CHECKING:
    from nea._admission import AdmissionStatistics
    from nea._memory import MemoryPlan

logger = logging.getLogger(ERROR_LOGGER)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0
# Peak-memory buckets: 64 KiB to 1 GiB in steps of 4 (and the budget, added per server).
PEAK_BUCKETS_BYTES = tuple(64 * 1024 * 4**k for k in range(8))


def _require_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--metrics: needs prometheus-client; install nea[standard] "
            "(pip install 'nea[standard]')"
        ) from None


class MetricsDirectory:
    """The multiprocess directory: ``PROMETHEUS_MULTIPROC_DIR`` if the environment already
    names one (the app's own metrics then join nea's), else a temporary one removed by
    ``close()``. Set it before any worker starts: they inherit the variable."""

    def __init__(self) -> None:
        existing = os.environ.get(MULTIPROC_ENV)
        self.owned = existing is None
        self.path = tempfile.mkdtemp(prefix="nea-metrics-") if existing is None else existing
        os.environ[MULTIPROC_ENV] = self.path

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)


class MetricsListener:
    """Serves ``/metrics`` (every process's values added up) on ``config.metrics`` from a
    daemon thread; ``close()`` stops it. Raises ``ConfigError`` when it cannot listen."""

    def __init__(self, config: Config) -> None:
        assert config.metrics is not None  # only built with --metrics
        _require_client()
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        host, port = parse_host_port("metrics", config.metrics)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"--metrics: cannot listen on {config.metrics}: {exc}") from None
        bound = self._server.server_address
        self.address: tuple[str, int] = (str(bound[0]), int(bound[1]))
        logger.info("metrics on http://%s:%d/metrics", *self.address)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a worker that exited (its counters still count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class ServerMetrics:
    """The metrics one serving process writes. ``sample(statistics)`` copies the admission
    counters; ``plan(plan)`` the memory plan; ``wrap(app)`` observes each request's peak.
    They go to the multiprocess files only (no registry holds them), so a process may build
    them more than once (one server after another in tests)."""

    def __init__(self, budget: int | None) -> None:
        _require_client()
        from prometheus_client import Counter, Gauge, Histogram

        def gauge(name: str, text: str) -> Any:
            return Gauge(name, text, multiprocess_mode="livesum", registry=None)

        self.slots = gauge("nea_slots", "Request slots (budgets) of the server.")
        self.busy = gauge("nea_slots_busy", "Slots running a request now.")
        self.waiting = gauge("nea_queue_waiting", "Requests waiting in the queue for a slot.")
        self.plan_bytes = gauge(
            "nea_memory_plan_bytes",
            "The memory plan: slots x budget + ws_slots x ws_budget + baseline, per process.",
        )
        self.budgets_bytes = gauge(
            "nea_memory_budgets_bytes", "slots x budget + ws_slots x ws_budget, per process."
        )
        self.baseline_bytes = gauge(
            "nea_memory_baseline_bytes", "Resident size once the app was loaded, per process."
        )
        self.region_bytes = gauge(
            "nea_region_bytes_in_use", "Bytes of the budget region touched (resident) now."
        )
        self.requests = {
            name: Counter(f"nea_requests_{name}", text, registry=None)
            for name, text in (
                ("served", "Requests that ran the app to its end (tripped ones included)."),
                ("tripped", "Requests whose memory budget was exceeded."),
                ("rejected", "Requests answered 503: no slot within the queue timeout."),
                ("abandoned", "Requests whose client left while they waited for a slot."),
            )
        }
        buckets = sorted({*PEAK_BUCKETS_BYTES, *([budget] if budget else [])})
        self.peak = Histogram(
            "nea_request_peak_memory_bytes",
            "Peak memory of each request's budget.",
            buckets=[*buckets, float("inf")],
            registry=None,
        )
        self._seen: dict[str, int] = dict.fromkeys(self.requests, 0)

    def sample(self, statistics: AdmissionStatistics) -> None:
        self.slots.set(statistics.slots or 0)
        self.busy.set(statistics.busy)
        self.waiting.set(statistics.waiting)
        for name, counter in self.requests.items():
            value = int(getattr(statistics, name))
            if value > self._seen[name]:
                counter.inc(value - self._seen[name])
                self._seen[name] = value
        from nea.meter import _door

        info = _door.region_info()
        self.region_bytes.set(info.get("pages_touched", 0) * info.get("page_bytes", 0))

    def plan(self, plan: MemoryPlan) -> None:
        self.plan_bytes.set(plan.total)
        self.budgets_bytes.set(plan.budgets)
        self.baseline_bytes.set(plan.baseline)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with each ``http`` request's budget peak observed when the app returns
        (or raises); other scopes pass through untouched."""
        observe: Callable[[float], None] = self.peak.observe

        async def app_with_metrics(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            try:
                await app(scope, receive, send)
            finally:
                budget = scope.get("extensions", {}).get("nea.budget")
                if budget is not None:
                    observe(budget.peak)

        return app_with_metrics
