"""The server's memory options at work: the meter, the admission of requests, the plan.

Owns: building the server's ``Admission`` from ``Config`` (``--budget``, ``--slots``,
``--queue``, ``--queue-timeout``, ``--meter``) and its ``WebSocketAdmission`` (``--ws-slots``,
``--ws-budget``), selecting the meter for the process, mapping
the region (``--region``, ``--prefault``, ``--release-memory``), and the startup steps that
log the memory plan and apply ``--memory-limit``. Must not import
``nea.server`` (the layer above).
"""

from __future__ import annotations

import logging

from nea._admission import Admission
from nea._errors import ConfigError
from nea._http.backends import websocket_backend
from nea._memory import MemoryPlan, apply_memory_limit, describe_memory_limit, resident_bytes
from nea._sizes import format_size
from nea._ws_admission import WebSocketAdmission
from nea.config import Config
from nea.meter import _door
from nea.meter._door import Meter

logger = logging.getLogger("nea.error")


def build_admission(config: Config) -> Admission:
    """The one ``Admission`` every request of the server goes through."""
    request_budget = None if config.meter == "off" else config.budget
    return Admission(
        budget=request_budget,
        slots=config.slots,
        queue=config.queue_size,
        queue_timeout=config.queue_timeout,
    )


def build_ws_admission(config: Config) -> WebSocketAdmission:
    """The WebSocket pool (``--ws-slots``, ``--ws-budget``), apart from the request slots."""
    ws_budget = None if config.meter == "off" else config.ws_budget
    return WebSocketAdmission(budget=ws_budget, slots=config.ws_slots)


def select_meter(config: Config) -> Meter | None:
    """Make ``config.meter`` the meter of new budgets; return the one it replaced (or None
    with ``--meter off``, which meters nothing). Raises ``ConfigError`` when the native
    meter is asked for but not built."""
    if config.meter == "off":
        return None
    if config.meter == "native" and not _door.native_available():
        raise ConfigError(
            "--meter native: the C extension nea._meter is not built for this interpreter; "
            "reinstall nea where a C compiler is available, or use --meter tracemalloc "
            "(slow, and concurrent requests see each other's memory) or --meter off"
        )
    return _door.use_meter(config.meter)


def restore_meter(previous: Meter | None) -> None:
    if previous is not None:
        _door.restore_meter(previous)


def start_region(config: Config) -> bool | None:
    """Map the region as ``slots`` slots of ``budget`` bytes (native meter, ``--region on``)
    or turn it off; returns the previous setting, for ``stop_region``. Region slots are
    taken by the outermost budgets as they open, so with one budget per admitted request
    there is one region slot per admission slot. Raises ``ConfigError`` when the mapping
    fails."""
    if config.meter != "native" or not _door.region_supported():
        return None
    previous = _door.enable_region(config.region == "on")
    if config.region == "off":
        return previous
    try:
        mapped = _door.configure_region(config.slots, int(config.budget), prefault=config.prefault)
    except OSError as exc:
        _door.enable_region(previous)
        raise ConfigError(
            f"--region on: could not map {config.slots} × {format_size(int(config.budget))} "
            f"of address space ({exc.strerror}); lower --slots or --budget, or use --region off"
        ) from None
    if not mapped:
        logger.info("region: kept the region mapped earlier in this process (blocks live in it)")
    return previous


def stop_region(previous: bool | None) -> None:
    if previous is not None:
        _door.enable_region(previous)


def release_idle_memory(config: Config, busy: int) -> None:
    """``--release-memory idle``: with no request running, give reset pages back."""
    if config.release_memory == "idle" and busy == 0 and config.meter == "native":
        _door.release_region()


def start_memory_plan(config: Config) -> MemoryPlan:
    """Log the memory plan and apply ``--memory-limit``; call once the app is loaded, so the
    baseline includes it. Raises ``ConfigError`` when the limit cannot be applied."""
    budget_bytes = None if config.meter == "off" else int(config.budget)
    region = _door.region_info()
    writable = region.get("pages_writable", 0) * region.get("page_bytes", 0)
    ws_slots = config.ws_slots if websocket_backend(config.ws) is not None else 0
    plan = MemoryPlan(
        slots=config.slots,
        budget=budget_bytes,
        baseline=resident_bytes(),
        reserved=writable,
        ws_slots=ws_slots,
        ws_budget=None if config.meter == "off" else config.ws_budget,
    )
    logger.info("%s", plan.describe())
    limit = apply_memory_limit(config.memory_limit, plan)
    if limit is not None:
        logger.info("%s", describe_memory_limit(limit))
    return plan
