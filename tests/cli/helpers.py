"""Running ``python -m nea`` as a subprocess and talking HTTP to it over real sockets.

Output is read by background threads into a queue, so waiting for a log line blocks on the
queue with a deadline (no polling, no sleeps) and a silent server fails the test in bounded time.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

APPS_DIR = Path(__file__).resolve().parent
WAIT_SECONDS = 30.0
RUNNING = re.compile(r"nea running on (?:https?://(?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)|\S+)")


class NeaProcess:
    """A ``python -m nea ...`` child process with its output lines in a queue."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            self._command(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=tuple(pass_fds),
            env=env,
            cwd=cwd,
        )
        self.lines: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        self._matched: set[int] = set()
        self._eofs = 0
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("stderr", self.process.stderr), ("stdout", self.process.stdout))
        ]
        for reader in self._readers:
            reader.start()

    def _command(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "nea", *args]

    def _read(self, name: str, stream: object) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put((name, line.rstrip("\n")))
        self.lines.put(None)

    def wait_for_line(self, pattern: str, timeout: float = WAIT_SECONDS) -> re.Match[str]:
        """The first output line matching ``pattern`` not returned before; fail after ``timeout``.

        Lines are kept, so waiting for one pattern never loses a line another wait needs.
        """
        compiled = re.compile(pattern)
        for index, (_, line) in enumerate(self.seen):
            match = compiled.search(line)
            if match and index not in self._matched:
                self._matched.add(index)
                return match
        deadline = _deadline(timeout)
        while True:
            if self._eofs == len(self._readers):
                pytest.fail(f"nea exited before printing {pattern!r}:\n{self.output()}")
            try:
                item = self.lines.get(timeout=max(0.0, deadline - _now()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout}s:\n{self.output()}")
            if item is None:
                self._eofs += 1
                continue
            self.seen.append(item)
            match = compiled.search(item[1])
            if match:
                self._matched.add(len(self.seen) - 1)
                return match

    def wait_running(self) -> tuple[str, int]:
        match = self.wait_for_line(RUNNING.pattern)
        return match.group("host").strip("[]"), int(match.group("port"))

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = WAIT_SECONDS) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"nea did not exit within {timeout}s:\n{self.output()}")
        for reader in self._readers:
            # EOF on the pipes also means every child (worker) sharing them has exited.
            reader.join(timeout=timeout)
            if reader.is_alive():
                pytest.fail(f"nea's output stayed open {timeout}s after exit:\n{self.output()}")
        self._drain()
        return code

    def stderr_lines(self) -> list[str]:
        self._drain()
        return [line for name, line in self.seen if name == "stderr"]

    def output(self) -> str:
        self._drain()
        return "\n".join(f"[{name}] {line}" for name, line in self.seen)

    def _drain(self) -> None:
        while True:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._eofs += 1
            else:
                self.seen.append(item)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _now() -> float:
    import time

    return time.monotonic()


def _deadline(timeout: float) -> float:
    return _now() + timeout


def run_nea(*args: str, timeout: float = WAIT_SECONDS) -> subprocess.CompletedProcess[str]:
    """Run nea to completion (for commands that are expected to fail fast)."""
    return subprocess.run(
        [sys.executable, "-m", "nea", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http_request(
    address: tuple[str, int] | str, request: bytes, timeout: float = WAIT_SECONDS
) -> bytes:
    """Send ``request`` on a new connection and return everything read until EOF."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=timeout)
    with sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get(address: tuple[str, int] | str, path: str = "/") -> tuple[int, bytes]:
    """``GET path`` with ``Connection: close``; returns (status, body)."""
    raw = http_request(
        address, f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)
