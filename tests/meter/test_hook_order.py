"""The meter's hooks in every order of ``tracemalloc.start/stop`` and other allocator hooks.

Each scenario runs in a fresh interpreter (the allocator chain is process state): budgets
must charge and refuse in every round, or say loudly that they could not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import tracemalloc, warnings, nea
from nea import _meter

def refused_every_time(rounds, before, after, inside=None):
    got = []
    for i in range(rounds):
        before()
        try:
            with nea.budget("1MiB") as b:
                if inside:
                    inside()
                x = bytearray(4 * 1024 * 1024)  # past the ceiling: refused
        except MemoryError:
            got.append(b.statistics().refused)
        after()
    return got
"""


def _run(body: str, region: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NEA_REGION": region, "PATH": ""},
    )


@pytest.fixture(params=["on", "off"])
def region(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_tracemalloc_started_and_stopped_around_every_budget(native: str, region: str) -> None:
    """The order of the report: nea first installs while tracemalloc traces; stop() then
    drops nea's hooks, and the next start() saves the plain allocator."""
    done = _run(
        "print(refused_every_time(4, tracemalloc.start, tracemalloc.stop))",
        region,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 1, 1, 1]"


def test_nea_first_then_tracemalloc_around_every_budget(native: str, region: str) -> None:
    done = _run(
        """
        with nea.budget("64MiB"):
            pass  # installs nea's hooks before tracemalloc ever starts
        print(refused_every_time(3, tracemalloc.start, tracemalloc.stop))
        """,
        region,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 1, 1]"


def test_tracemalloc_running_across_budgets_then_stopped(native: str, region: str) -> None:
    done = _run(
        """
        tracemalloc.start()
        first = refused_every_time(2, lambda: None, lambda: None)
        tracemalloc.stop()
        second = refused_every_time(2, lambda: None, lambda: None)
        tracemalloc.start()
        third = refused_every_time(2, lambda: None, lambda: None)
        tracemalloc.stop()
        print(first, second, third)
        """,
        region,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 1] [1, 1] [1, 1]"


def test_hooks_removed_while_a_budget_is_open_warn_loudly(native: str, region: str) -> None:
    """tracemalloc.stop() inside a budget, when nea's hooks were installed above
    tracemalloc's: the rest of the block is not charged, and leaving it says so."""
    done = _run(
        """
        tracemalloc.start()
        try:
            with nea.budget("64MiB"):
                tracemalloc.stop()  # drops nea's hooks (installed on top of tracemalloc)
                x = bytearray(1024)
        except RuntimeWarning as w:
            print("warned:", "hooks were removed" in str(w))
        print(refused_every_time(2, lambda: None, lambda: None))  # reinstalled
        """,
        region,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["warned: True", "[1, 1]"]


def test_another_hook_installed_above_nea_is_respected(native: str, region: str) -> None:
    """A profiler-style hook on top of nea's (it saves nea's hooks and calls them): nea
    stays below it and keeps charging; no loop, no reinstall on top."""
    done = _run(
        """
        import ctypes
        with nea.budget("64MiB"):
            pass
        tracemalloc.start()  # a hook above nea's that calls them
        print(refused_every_time(2, lambda: None, lambda: None), _meter.installed())
        tracemalloc.stop()
        print(_meter.installed())
        """,
        region,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[1, 1] False", "True"]
