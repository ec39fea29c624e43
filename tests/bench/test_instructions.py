"""bench/instructions.py and bench/_common.py: option parsing, the table, /proc CPU time,
without valgrind or servers."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    # The scripts import their siblings by bare name, as Python allows when run as scripts.
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("instructions"), importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))
        for name in ("instructions", "_common"):
            sys.modules.pop(name, None)


def test_only_picks_rows_and_columns(bench: tuple[ModuleType, ModuleType]) -> None:
    instructions, _ = bench
    assert instructions._select("json,nea-off") == (["json"], ["nea-off"])
    assert instructions._select("uvicorn-budget, hello") == (["hello"], ["uvicorn-budget"])
    assert instructions._select("nea-defaults") == (["hello", "json"], ["nea-defaults"])
    assert instructions._select(None) == (list(instructions.ROWS), list(instructions.COLUMNS))


def test_only_rejects_unknown_names(bench: tuple[ModuleType, ModuleType]) -> None:
    instructions, _ = bench
    with pytest.raises(instructions.BenchError, match="unknown jsn; rows are hello, json"):
        instructions._select("jsn,nea-off")


def test_every_column_compares_with_a_baseline_column(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    instructions, _ = bench
    for column in instructions.COLUMNS.values():
        if column.baseline is not None:
            baseline = instructions.COLUMNS[column.baseline]
            assert baseline.baseline is None and baseline.server == column.server


def test_report_prints_ratios_against_the_row_baseline(
    bench: tuple[ModuleType, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    instructions, _ = bench
    results = {
        ("json", "nea-off"): 4_000_000.0,
        ("json", "nea-defaults"): 4_100_000.0,
        ("json", "uvicorn-budget"): 1_000.0,
    }
    instructions.report(results)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-2:] == ["4,000,000", "(baseline)"]
    assert lines[2].endswith("4,100,000       +2.5 %")
    assert lines[3].endswith("(no baseline)")


def test_cpu_seconds_reads_this_process(bench: tuple[ModuleType, ModuleType]) -> None:
    _, common = bench
    before = common.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # about 0.1 s of CPU: past a few clock ticks
    assert common.cpu_seconds(os.getpid()) > before
