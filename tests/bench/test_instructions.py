"""bench/instructions.py and bench/_common.py: option parsing, the table, /proc CPU time,
without valgrind or servers."""

from __future__ import annotations

import importlib
import os
import subprocess
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
    every_row = ["hello", "text", "json", "echo"]
    assert instructions._select("nea-defaults") == (every_row, ["nea-defaults"])
    assert instructions._select(None) == (list(instructions.ROWS), list(instructions.COLUMNS))


def test_only_rejects_unknown_names(bench: tuple[ModuleType, ModuleType]) -> None:
    instructions, _ = bench
    rows = "hello, text, json, echo"
    with pytest.raises(instructions.BenchError, match=f"unknown jsn; rows are {rows}"):
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
    count = instructions.Count
    results = {
        ("json", "nea-off"): count(4_000_000.0, 200_000.0),
        ("json", "nea-defaults"): count(4_100_000.0, 150_000.0),
        ("json", "uvicorn-budget"): count(1_000.0, 0.0),
    }
    instructions.report(results)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-4:] == ["4,000,000", "(baseline)", "3,800,000", "(baseline)"]
    assert lines[2].split()[-6:] == ["4,100,000", "+2.5", "%", "3,950,000", "+3.9", "%"]
    assert lines[3].endswith("(no baseline)")


def test_report_adds_cache_misses_when_simulated(
    bench: tuple[ModuleType, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    instructions, _ = bench
    count = instructions.Count
    results = {
        ("hello", "nea-off"): count(100_000.0, 0.0, 2_000.0, 100.0),
        ("hello", "nea-defaults"): count(105_000.0, 0.0, 2_200.0, 120.0),
    }
    instructions.report(results, cache_sim=True)
    lines = capsys.readouterr().out.splitlines()
    assert "D1 misses" in lines[0] and "LL misses" in lines[0]
    assert lines[2].split()[-4:] == ["2,200", "+10.0", "%", "120"]


def test_misses_reads_callgrinds_cache_summary(bench: tuple[ModuleType, ModuleType]) -> None:
    instructions, _ = bench
    log = """\
==1== D   refs:       40,087  (28,317 rd + 11,770 wr)
==1== D1  misses:      1,493  (   919 rd +    574 wr)
==1== LLd misses:      1,329  (   782 rd +    547 wr)
==1== LL misses:       2,393  ( 1,846 rd +    547 wr)
"""
    assert instructions._misses(log, "D1 ") == 1_493
    assert instructions._misses(log, "LL") == 2_393
    assert instructions._misses("Collected : 5", "LL") == 0


def test_copies_sums_libc_memory_copies_of_a_profile(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instructions, _ = bench
    annotated = """\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
4,000,000 (100.0%)  PROGRAM TOTALS
  195,429 ( 4.86%)  ./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:\
__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
   10,000 ( 0.25%)  ./string/../sysdeps/x86_64/multiarch/memset-vec-unaligned-erms.S:\
__memset_avx2_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
   99,000 ( 2.47%)  Objects/obmalloc.c:_PyObject_Malloc [libpython3.11.so.1.0]
    7,000 ( 0.17%)  Objects/bytesobject.c:memmove_like_helper [libpython3.11.so.1.0]
"""

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[0] == "callgrind_annotate" and command[-1] == str(tmp_path / "p")
        return subprocess.CompletedProcess(command, 0, annotated, "")

    monkeypatch.setattr(instructions.subprocess, "run", fake_run)
    assert instructions._copies(tmp_path / "p") == 205_429


def test_cpu_seconds_reads_this_process(bench: tuple[ModuleType, ModuleType]) -> None:
    _, common = bench
    before = common.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # about 0.1 s of CPU: past a few clock ticks
    assert common.cpu_seconds(os.getpid()) > before


def test_every_row_names_apps_that_exist(bench: tuple[ModuleType, ModuleType]) -> None:
    instructions, _ = bench
    try:
        apps = importlib.import_module("_apps")  # bench/ is on sys.path while `bench` lives
        for name, row in instructions.ROWS.items():
            for spec in (row.nea_app, row.uvicorn_plain, row.uvicorn_metered):
                module, _, attribute = spec.partition(":")
                assert module == "_apps", (name, spec)
                assert callable(getattr(apps, attribute)), (name, spec)
    finally:
        sys.modules.pop("_apps", None)


def test_pin_takes_two_cpus_this_process_may_use(bench: tuple[ModuleType, ModuleType]) -> None:
    _, common = bench
    cpu = min(os.sched_getaffinity(0))
    assert common.parse_pin(None) is None
    assert common.parse_pin(f"{cpu},{cpu}") == (cpu, cpu)
    for bad in ("1", "a,b", f"{cpu},{cpu},{cpu}", f"{cpu},100000"):
        with pytest.raises(ValueError, match="--pin: expected SERVER,CLIENT CPU numbers"):
            common.parse_pin(bad)
