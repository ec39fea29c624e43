"""The example apps (served by ``make run`` and the benchmark) work under ``nea``."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from .helpers import NeaProcess, get, http_request

StartNea = Callable[..., NeaProcess]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_hello(start_nea: StartNea) -> None:
    nea = start_nea("hello:app", "--app-dir", str(EXAMPLES), "--port", "0")
    address = nea.wait_running()
    assert get(address) == (200, b"Hello, world!")
    nea.send_signal(signal.SIGINT)
    assert nea.wait_exit() == 0


def test_starlette_app(start_nea: StartNea) -> None:
    nea = start_nea("starlette_app:app", "--app-dir", str(EXAMPLES), "--port", "0")
    address = nea.wait_running()
    assert get(address, "/plaintext") == (200, b"Hello, world!")
    status, body = get(address, "/json")
    assert status == 200
    assert 19_000 < len(body) < 21_000  # "~20 KB", as the benchmark row says
    assert json.loads(body)["count"] == 240
    payload = bytes(range(256)) * 256  # 64 KiB
    raw = http_request(
        address,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: application/octet-stream\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload,
    )
    head, _, echoed = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert echoed == payload
    nea.send_signal(signal.SIGINT)
    assert nea.wait_exit() == 0
