"""C libraries' malloc blocks are charged to budgets (native meter, csrc/clibs.c).

Each case runs in its own interpreter with a deadline (tests/meter/_clib_cases.py): the
relocation patching is process-wide, and a library that misbehaves must not take the test
run down. The oracles are glibc's own count of malloc's bytes in use and known buffer
sizes, independent of nea.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="relocation patching is Linux/glibc only"
)

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120.0
MiB = 1024 * 1024


def run_case(name: str, **env: str) -> Any:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.meter._clib_cases", name],
        cwd=ROOT,
        env={**os.environ, "NEA_METER": "native", **env},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_close(charged: int, truth: int | None, tolerance: float = 0.05) -> None:
    if truth is None:
        return  # another malloc is preloaded (make asan): glibc's count sees nothing
    assert abs(charged - truth) <= tolerance * truth, (charged, truth)


def test_pillow_image_buffers() -> None:
    pytest.importorskip("PIL")
    r = run_case("pillow")
    assert r["pixels"] <= r["live"] <= r["pixels"] + 256 * 1024
    assert_close(r["live"], r["truth"])


def test_lxml_trees() -> None:
    pytest.importorskip("lxml")
    r = run_case("lxml")
    assert r["live"] > 40 * MiB
    assert_close(r["live"], r["truth"])


def test_sqlite_pages() -> None:
    r = run_case("sqlite")
    assert r["live"] >= 6 * MiB
    assert_close(r["live"], r["truth"])


def test_openssl_scrypt_working_set_without_the_gil() -> None:
    r = run_case("scrypt")
    assert r["working_set"] <= r["peak"] <= r["working_set"] + 256 * 1024
    assert r["retained"] < 64 * 1024  # freed inside the call: un-charged


def test_arrow_system_pool() -> None:
    pytest.importorskip("pyarrow")
    r = run_case("arrow_system_pool")
    assert r["pool"] <= r["live"] <= r["pool"] + MiB  # the result buffer, 80 MB
    assert r["peak"] >= 2 * r["pool"]  # the cast's buffer was charged while it lived


def test_pandas_frames() -> None:
    pytest.importorskip("pandas")
    r = run_case("pandas")
    assert r["live"] >= 20 * MiB
    assert_close(r["live"], r["truth"])


def test_threads_without_the_gil_are_charged_to_their_own_budget() -> None:
    r = run_case("threads_apart")
    small, large = r[str(2**14)], r[str(2**16)]
    assert 16 * MiB <= small <= 17 * MiB  # never the other budget's 64 MiB
    assert 64 * MiB <= large <= 65 * MiB


def test_a_raw_thread_is_charged_to_no_budget_a_copied_context_to_its_own() -> None:
    pytest.importorskip("PIL")
    r = run_case("raw_thread")
    assert r["raw"] < 64 * 1024
    assert r["gray"] <= r["copied"] <= r["gray"] + 128 * 1024


def test_images_past_the_limit_trip_at_the_next_line() -> None:
    pytest.importorskip("PIL")
    r = run_case("trip_pillow")
    assert r["message"] is not None and "crossed it" in r["message"]
    assert r["made"] == 4  # the fifth image crossed 16 MiB; nothing ran after it
    assert r["peak"] <= 16 * MiB + 4 * MiB + 256 * 1024  # one image of slack
    # the process itself: the four images kept, the fifth made, and the interpreter's own
    # few hundred kilobytes (the exception, its traceback)
    assert 16 * MiB < r["rss_growth"] <= 16 * MiB + 4 * MiB + MiB
    unmetered = run_case("trip_pillow", NEA_C_LIBRARIES="off")
    assert unmetered["made"] == 8 and unmetered["message"] is None
    assert unmetered["rss_growth"] > 30 * MiB


def test_sqlite_past_the_limit_trips_between_statements() -> None:
    r = run_case("trip_sqlite")
    assert r["tripped"], r
    assert r["peak"] <= 8 * MiB + 2 * MiB  # a batch of rows of slack


def test_one_long_c_call_past_the_limit_raises_at_the_next_line() -> None:
    r = run_case("trip_scrypt")
    assert r["message"] is not None and "an allocation of 32.0 MiB" in r["message"]
    assert r["after"] == []


def test_off_switch() -> None:
    r = run_case("pillow", NEA_C_LIBRARIES="off")
    assert r["live"] < MiB
    info = run_case("info", NEA_C_LIBRARIES="off")
    assert info["slots"] == 0


def test_what_is_patched() -> None:
    pytest.importorskip("PIL")
    info = run_case("info")
    assert info["supported"] == 1
    assert info["objects"] >= 2 and info["slots"] >= 4  # _imaging and its bundled libraries
