"""How far past its budget a tripped request gets before its safe point, per case of the
trip corpus (tests/trips/corpus_apps.py), on nea's server.

    python bench/trip_overshoot.py

Starts one nea server per app, sends each tripping request once, and prints the budget,
the peak the server's warning line reports, and the overshoot (peak - budget).
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cli.helpers import NeaProcess, get  # noqa: E402
from tests.trips.test_corpus import CASES, HERE  # noqa: E402

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def main() -> None:
    print(f"{'case':<34} {'budget':>8} {'peak':>10} {'past budget':>12}")
    for app, path, _, budget in CASES:
        server = NeaProcess(
            ["--app-dir", str(HERE), f"corpus_apps:{app}", "--port", "0", "--budget", budget]
        )
        try:
            address = server.wait_running()
            status, _ = get(address, path)
            line = server.wait_for_line(r"out of memory: GET " + re.escape(path)).string
            peak = re.search(r"\(peak ([\d.]+ \w+)\)", line)
            assert peak is not None, line
            limit = _bytes(budget.replace("MiB", " MiB"))
            over = _bytes(peak.group(1)) - limit
            print(
                f"{app + ' ' + path:<34} {budget:>8} {peak.group(1):>10} "
                f"{over / 1024**2:>9.1f} MiB  (status {status})"
            )
            server.send_signal(signal.SIGTERM)
            server.wait_exit()
        finally:
            server.close()


if __name__ == "__main__":
    main()
