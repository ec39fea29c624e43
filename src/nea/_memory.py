"""The process's memory plan and its hard memory limit (``--memory-limit``).

Owns: ``MemoryPlan`` (slots × budget + baseline, the line the server logs at startup),
reading the process's resident and data sizes, and ``apply_memory_limit``, which caps the
process with ``setrlimit(RLIMIT_DATA)``. Must not import the server, the HTTP layer or the
meter.

Why RLIMIT_DATA and not RLIMIT_AS (measured on Linux 6.x, Python 3.11, uvloop, 40 threads
from anyio's default thread pool, limit = start + 512 MiB): RLIMIT_AS counts address space
that is only reserved, never touched (glibc's 64 MiB per-thread malloc arenas, 8 MiB thread
stacks): VmSize grew from 27 MiB to 534 MiB while RSS stayed at 27 MiB, so the thread pool
could not even start ("can't start new thread"). RLIMIT_DATA counts private writable
mappings: the arenas' untouched reserve is not counted, the thread pool started, and
allocations failed with ``MemoryError`` 160 MiB later, as intended (VmData 349 MiB, RSS 30
MiB: thread stacks still count, 8 MiB each, which ``auto`` adds as headroom).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from nea._errors import ConfigError
from nea._sizes import format_size

# anyio's default thread limiter: at most 40 worker threads run `def` endpoints at once.
WORKER_THREADS = 40
# Fallback thread stack size when RLIMIT_STACK is unlimited or unknown (glibc's default).
DEFAULT_THREAD_STACK_BYTES = 8 * 1024 * 1024
# `auto` leaves this much room on top of the plan for connection buffers, the interpreter's
# own growth and what tripped budgets take past their limit: 10 % of the plan, at least 64 MiB.
AUTO_HEADROOM_FRACTION = 0.10
AUTO_HEADROOM_MIN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class MemoryPlan:
    """What the server may use: ``slots`` budgets of ``budget`` bytes on top of ``baseline``
    (the resident size once the app is imported and its lifespan started)."""

    slots: int
    budget: int | None
    baseline: int
    # Budget memory already counted as data at startup (the region's pages made writable
    # by --prefault): ``auto`` does not count it twice.
    reserved: int = 0
    # The WebSocket pool (docs/websockets.md): 0 slots when WebSockets are off.
    ws_slots: int = 0
    ws_budget: int | None = None

    @property
    def budgets(self) -> int:
        return self.slots * (self.budget or 0) + self.ws_slots * (self.ws_budget or 0)

    @property
    def total(self) -> int:
        return self.budgets + self.baseline

    def describe(self) -> str:
        if self.budget is None:
            return (
                f"memory plan: {self.slots} slots, no budgets (--meter off) "
                f"+ baseline {format_size(self.baseline)}"
            )
        requests = self.slots * self.budget
        line = (
            f"memory plan: {self.slots} slots × {format_size(self.budget)} = "
            f"{format_size(requests)} + baseline {format_size(self.baseline)}"
        )
        if self.ws_slots and self.ws_budget is not None:
            line += (
                f" + WebSocket pool {self.ws_slots} × {format_size(self.ws_budget)} = "
                f"{format_size(self.ws_slots * self.ws_budget)}"
            )
        return line


def _proc_status(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux) in bytes, or None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def resident_bytes() -> int:
    """The process's resident set size now (Linux), or its peak where only that is known."""
    rss = _proc_status("VmRSS")
    if rss is not None:
        return rss
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def data_bytes() -> int:
    """What RLIMIT_DATA counts now (VmData on Linux; the resident size elsewhere)."""
    data = _proc_status("VmData")
    return data if data is not None else resident_bytes()


def thread_stack_bytes() -> int:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return DEFAULT_THREAD_STACK_BYTES
    return int(soft)


def auto_memory_limit(plan: MemoryPlan) -> int:
    """The plan measured the way RLIMIT_DATA counts, plus worker thread stacks and headroom."""
    if plan.budget is None:
        raise ConfigError(
            "--memory-limit auto: the plan needs budgets, but --meter is off; "
            "give a size (e.g. --memory-limit 2GiB) or turn the meter on"
        )
    budgets = max(plan.budgets - plan.reserved, 0)
    planned = data_bytes() + budgets + WORKER_THREADS * thread_stack_bytes()
    return planned + max(int(planned * AUTO_HEADROOM_FRACTION), AUTO_HEADROOM_MIN_BYTES)


def apply_memory_limit(setting: int | str | None, plan: MemoryPlan) -> int | None:
    """Cap the process at ``setting`` (bytes, ``"auto"`` or None for no cap).

    Returns the limit applied, in bytes. Raises ``ConfigError`` when the platform has no
    RLIMIT_DATA, the limit is below what the process already uses, or above the hard limit.
    """
    if setting is None:
        return None
    try:
        import resource
    except ImportError:
        raise ConfigError("--memory-limit: not supported on this platform (no setrlimit)") from None
    limit = auto_memory_limit(plan) if setting == "auto" else int(setting)
    used = data_bytes()
    if limit <= used:
        raise ConfigError(
            f"--memory-limit: {format_size(limit)} is not above what the process already "
            f"uses ({format_size(used)} of data); give a larger size or 'auto'"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY and limit > hard:
        raise ConfigError(
            f"--memory-limit: {format_size(limit)} is above the hard data limit "
            f"({format_size(hard)}) set for this process; give at most that"
        )
    # Only the soft limit: the hard one stays, so an operator can still raise it.
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return limit


def describe_memory_limit(limit: int) -> str:
    return (
        f"memory limit: {format_size(limit)} of data for process {os.getpid()} "
        f"(RLIMIT_DATA; allocations beyond it fail with MemoryError)"
    )
