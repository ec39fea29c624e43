"""bench/noisy_neighbour.py: parsing wrk's report and building the table, without servers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "noisy_neighbour.py"

WRK_REPORT = """\
Running 2s test @ http://127.0.0.1:40000/small
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.70ms    2.87ms  28.71ms   79.82%
    Req/Sec     2.33k   342.39     2.81k    55.00%
  Latency Distribution
     50%  850.00us
     75%   14.50ms
     90%   16.00ms
     99%    1.25s
  4659 requests in 2.01s, 545.98KB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   2316.47
Transfer/sec:    271.46KB
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_nea_bench_noisy", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_parse_wrk_counts_successes_failures_and_percentiles(bench: ModuleType) -> None:
    result = bench.Result("uvicorn")
    bench.parse_wrk(WRK_REPORT, result)
    assert result.neighbour_ok == 4659 - 7
    assert dict(result.neighbour_failures) == {
        "HTTP non-2xx": 7,
        "socket read error": 3,
        "socket timeout error": 2,
    }
    assert result.neighbour_total == 4659 + 3 + 2
    assert result.neighbour_p50 == pytest.approx(850e-6)
    assert result.neighbour_p99 == pytest.approx(1.25)


def test_parse_wrk_without_a_report_is_a_failure_not_a_crash(bench: ModuleType) -> None:
    result = bench.Result("nea")
    bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", result)
    assert result.neighbour_ok == 0
    assert list(result.neighbour_failures) == [
        "wrk failed: unable to connect to 127.0.0.1:1 Connection refused"
    ]


def test_summary_and_table(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    nea = bench.Result("nea", neighbour_ok=99, neighbour_p50=0.012, neighbour_p99=0.030)
    nea.neighbour_failures["HTTP non-2xx"] = 1
    nea.hog_outcomes["500 Out of Memory"] = 20
    nea.hog_failure_seconds.extend([0.01, 0.02, 0.03])
    nea.peak_rss_bytes = 100 * bench.MIB
    nea.alive = True
    uvicorn = bench.Result("uvicorn", exit_note="exited with code -9")
    rows = bench.summary(nea, 200 * bench.MIB)
    assert rows["neighbour success"] == "99.00 %"
    assert rows["neighbour p99 latency"] == "30.0 ms"
    assert rows["hog outcomes"] == "20× 500 Out of Memory"
    assert rows["hog start→failure (median)"] == "20 ms"
    assert rows["peak RSS within cap"] == "yes"
    assert bench.summary(uvicorn, 200 * bench.MIB)["alive at end"] == "NO (exited with code -9)"
    bench.print_table([nea, uvicorn], 200 * bench.MIB)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("|")[1].strip() == "nea"
    assert any(line.startswith("alive at end") and "yes" in line for line in lines)


def test_unknown_server_names_are_refused(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--servers", "gunicorn"]) == 2
    assert "--servers: expected names from nea,uvicorn" in capsys.readouterr().err
