"""The server's memory options at work: the meter, the admission of requests, the plan.

Owns: building the server's ``Admission`` from ``Config`` (``--budget``, ``--slots``,
``--queue``, ``--queue-timeout``, ``--meter``), selecting the meter for the process, and the
startup steps that log the memory plan and apply ``--memory-limit``. Must not import
``nea.server`` (the layer above).
"""

from __future__ import annotations

import logging

from nea._admission import Admission
from nea._errors import ConfigError
from nea._memory import MemoryPlan, apply_memory_limit, describe_memory_limit, resident_bytes
from nea.config import Config
from nea.meter import _select
from nea.meter._select import Meter

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


def select_meter(config: Config) -> Meter | None:
    """Make ``config.meter`` the meter of new budgets; return the one it replaced (or None
    with ``--meter off``, which meters nothing). Raises ``ConfigError`` when the native
    meter is asked for but not built."""
    if config.meter == "off":
        return None
    if config.meter == "native" and not _select.native_available():
        raise ConfigError(
            "--meter native: the C extension nea._meter is not built for this interpreter; "
            "reinstall nea where a C compiler is available, or use --meter tracemalloc "
            "(slow, and concurrent requests see each other's memory) or --meter off"
        )
    return _select.use_meter(config.meter)


def restore_meter(previous: Meter | None) -> None:
    if previous is not None:
        _select.restore_meter(previous)


def start_memory_plan(config: Config) -> MemoryPlan:
    """Log the memory plan and apply ``--memory-limit``; call once the app is loaded, so the
    baseline includes it. Raises ``ConfigError`` when the limit cannot be applied."""
    budget_bytes = None if config.meter == "off" else int(config.budget)
    plan = MemoryPlan(slots=config.slots, budget=budget_bytes, baseline=resident_bytes())
    logger.info("%s", plan.describe())
    limit = apply_memory_limit(config.memory_limit, plan)
    if limit is not None:
        logger.info("%s", describe_memory_limit(limit))
    return plan
