"""Which setrlimit caps a Python web server's memory usefully: RLIMIT_AS or RLIMIT_DATA?

Starts uvicorn serving ``examples/fastapi_app.py`` under the given cap, then prints the
process's VmSize/VmData/VmRSS/threads idle, after 40 concurrent ``def`` requests of 1 MB
each (they start thread-pool threads), and after a few large ``async def`` requests.
The numbers behind the choice of RLIMIT_DATA in ``bench/noisy_neighbour.py`` and
``docs/serving.md``:

    python bench/rlimit_probe.py as 352MiB
    python bench/rlimit_probe.py data 352MiB

All traffic goes to 127.0.0.1; each request times out after 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from nea import parse_size

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
LIMITS = {"as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA}
REQUEST_TIMEOUT_SECONDS = 20.0


def status(pid: int) -> str:
    fields = {}
    with open(f"/proc/{pid}/status") as lines:
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("VmSize", "VmData", "VmRSS", "Threads"):
                fields[key] = value.strip()
    return ", ".join(f"{key} {value}" for key, value in fields.items())


def outcome(response: httpx.Response | BaseException) -> str:
    if isinstance(response, httpx.Response):
        return str(response.status_code)
    return type(response).__name__


async def probe(pid: int, port: int) -> None:
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        first = await client.get("/")
        print(f"idle ({first.status_code}): {status(pid)}")
        small = await asyncio.gather(
            *(client.get("/alloc-sync", params={"kb": 1000}) for _ in range(40)),
            return_exceptions=True,
        )
        ok = sum(outcome(response) == "200" for response in small)
        print(f"40 concurrent def × 1 MB: {ok}/40 OK: {status(pid)}")
        sizes_kb = (50_000, 100_000, 200_000, 300_000)
        large = await asyncio.gather(
            *(client.get("/alloc", params={"kb": kb}) for kb in sizes_kb),
            return_exceptions=True,
        )
        outcomes = ", ".join(
            f"{kb // 1000} MB → {outcome(r)}" for kb, r in zip(sizes_kb, large, strict=True)
        )
        print(f"async def, large: {outcomes}: {status(pid)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("limit", choices=sorted(LIMITS))
    parser.add_argument("cap", help="size, e.g. 352MiB")
    args = parser.parse_args()
    cap = parse_size(args.cap)

    def preexec() -> None:
        resource.setrlimit(LIMITS[args.limit], (cap, cap))

    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES_DIR)]
        command += ["fastapi_app:app", "--fd", str(sock.fileno()), "--log-level", "critical"]
        process = subprocess.Popen(command, pass_fds=(sock.fileno(),), preexec_fn=preexec)
    print(f"uvicorn + FastAPI under RLIMIT_{args.limit.upper()} = {args.cap}")
    try:
        asyncio.run(probe(process.pid, port))
    finally:
        process.kill()
        process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
