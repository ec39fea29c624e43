"""``nea`` as a process: the memory options on the command line, the memory plan line, and
``--memory-limit`` capping the whole process (RLIMIT_DATA)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.cli.helpers import NeaProcess, get, run_nea

HERE = Path(__file__).resolve().parent
APP = ("--app-dir", str(HERE), "apps:hog_app", "--port", "0")
MiB = 1024 * 1024


def data_limit(pid: int) -> str:
    """The soft "Max data size" of process ``pid`` as /proc shows it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max data size"):
            return line.split()[3]
    raise AssertionError("no data limit line")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux /proc")
def test_memory_limit_caps_memory_outside_the_budgets(
    start_nea: Callable[..., NeaProcess],
) -> None:
    nea = start_nea(*APP, "--budget", "8MiB", "--slots", "4", "--memory-limit", "256MiB")
    plan = nea.wait_for_line(r"memory plan: 4 slots × 8\.0 MiB = 32\.0 MiB \+ baseline \S+ MiB")
    assert plan
    nea.wait_for_line(r"memory limit: 256\.0 MiB of data for process \d+ \(RLIMIT_DATA")
    address = nea.wait_running()
    assert data_limit(nea.process.pid) == str(256 * MiB)
    # C's malloc is not metered by budgets; the process limit refuses it instead of the
    # kernel's OOM killer ending the process.
    assert get(address, "/malloc/512") == (200, b"malloc refused")
    assert get(address, "/malloc/16") == (200, b"malloc ok")
    assert get(address, "/alloc/64")[0] == 500  # the budget still trips first
    assert get(address, "/alloc/2") == (200, b"allocated 2 MiB")
    assert nea.process.poll() is None


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux /proc")
def test_memory_limit_auto_is_the_plan_plus_headroom(
    start_nea: Callable[..., NeaProcess],
) -> None:
    nea = start_nea(
        *APP, "--budget", "16MiB", "--slots", "8", "--memory-limit", "auto", "--ws", "none"
    )
    match = nea.wait_for_line(r"memory limit: (\d+\.\d) MiB of data")
    nea.wait_running()
    limit = int(data_limit(nea.process.pid))
    # VmData at startup + 8 × 16 MiB + 40 worker thread stacks + ≥ 64 MiB headroom.
    assert limit >= 128 * MiB + 40 * 8 * MiB + 64 * MiB
    assert abs(limit / MiB - float(match.group(1))) < 0.1


def test_memory_limit_below_current_use_is_a_one_line_error() -> None:
    result = run_nea(*APP, "--memory-limit", "1MiB")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert re.fullmatch(
        r"nea: error: --memory-limit: 1\.0 MiB is not above what the process already uses "
        r"\(.* of data\); give a larger size or 'auto'",
        lines[-1],
    ), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--budget", "lots"), "nea: error: --budget: expected a size; cannot parse size 'lots'"),
        (("--budget", "0"), "nea: error: --budget: expected a size of at least 1 byte(s)"),
        (("--slots", "0"), "nea: error: --slots: expected a whole number at least 1, got 0"),
        (("--slots", "many"), "nea: error: --slots: expected a whole number, got 'many'"),
        (("--queue", "-1"), "nea: error: --queue: expected a whole number at least 0, got -1"),
        (("--queue-timeout", "soon"), "nea: error: --queue-timeout: expected a number"),
        (("--meter", "fast"), "nea: error: --meter: expected one of native, tracemalloc, off"),
        (("--memory-limit", "huge"), "nea: error: --memory-limit: expected 'auto', 'off' or a"),
        (
            ("--meter", "off", "--memory-limit", "auto"),
            "nea: error: --memory-limit auto: the memory plan needs budgets, but --meter is off",
        ),
    ],
)
def test_bad_memory_options_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = run_nea(*APP, *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr


def test_memory_options_reach_the_config() -> None:
    from nea.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        [
            *("m:app", "--budget", "16MiB", "--slots", "8", "--queue", "3"),
            *("--queue-timeout", "2.5", "--meter", "tracemalloc", "--memory-limit", "1GiB"),
        ]
    )
    config = config_from_args(args, {})
    assert (config.budget, config.slots, config.queue_size) == (16 * MiB, 8, 3)
    assert (config.queue_timeout, config.meter, config.memory_limit) == (
        2.5,
        "tracemalloc",
        1024 * MiB,
    )
    defaults = config_from_args(build_parser().parse_args(["m:app"]), {})
    assert (defaults.budget, defaults.slots, defaults.queue_size) == (32 * MiB, 64, 128)
    assert (defaults.queue_timeout, defaults.meter, defaults.memory_limit) == (10.0, "native", None)


def test_region_options_reach_the_config() -> None:
    from nea.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["m:app", "--region", "off", "--prefault", "--release-memory", "idle"]
    )
    config = config_from_args(args, {})
    assert (config.region, config.prefault, config.release_memory) == ("off", True, "idle")
    defaults = config_from_args(build_parser().parse_args(["m:app"]), {})
    assert (defaults.region, defaults.prefault, defaults.release_memory) == ("on", False, "never")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--region", "maybe"), "nea: error: --region: expected one of on, off"),
        (("--release-memory", "now"), "nea: error: --release-memory: expected one of never, idle"),
    ],
)
def test_bad_region_options_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = run_nea(*APP, *args)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
