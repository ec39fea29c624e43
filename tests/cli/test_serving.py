"""``nea`` serving for real: --port 0, --uds, --fd, SIGINT with a request in flight, exit 3."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

from .helpers import APPS_DIR, WAIT_SECONDS, NeaProcess, get, run_nea

StartNea = Callable[..., NeaProcess]
APP_DIR = ("--app-dir", str(APPS_DIR))
# held_app answers after the first part of its body: that body must reach it in parts,
# not be read whole before the request goes to the app.
HELD = (*APP_DIR, "--buffer-request-body", "0")


def read_until(client: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = client.recv(4096)
        assert chunk, f"connection closed before {marker!r}: {received!r}"
        received += chunk
    return received


def test_port_zero_logs_the_real_port(start_nea: StartNea) -> None:
    nea = start_nea("nea_test_apps:pid_app", *APP_DIR, "--port", "0")
    host, port = nea.wait_running()
    assert (host, port != 0) == ("127.0.0.1", True)
    status, body = get((host, port))
    assert status == 200
    assert int(body) == nea.process.pid
    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0


def test_unix_domain_socket(start_nea: StartNea, tmp_path: Path) -> None:
    path = str(tmp_path / "nea.sock")
    nea = start_nea("nea_test_apps:pid_app", *APP_DIR, "--uds", path)
    nea.wait_for_line(r"nea running on unix:" + path)
    assert get(path) == (200, str(nea.process.pid).encode())
    nea.send_signal(signal.SIGINT)
    assert nea.wait_exit() == 0
    assert not Path(path).exists()  # nea removes the socket file it created


def test_inherited_file_descriptor(start_nea: StartNea) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()
        fd = listener.fileno()
        nea = start_nea("nea_test_apps:pid_app", *APP_DIR, "--fd", str(fd), pass_fds=[fd])
        nea.wait_running()
        assert get(address) == (200, str(nea.process.pid).encode())
        nea.send_signal(signal.SIGTERM)
        assert nea.wait_exit() == 0


def test_sigint_lets_the_request_in_flight_finish(start_nea: StartNea) -> None:
    nea = start_nea("nea_test_apps:held_app", *HELD, "--port", "0")
    address = nea.wait_running()
    with socket.create_connection(address, timeout=WAIT_SECONDS) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
        received = read_until(client, b"first part received")
        nea.send_signal(signal.SIGINT)
        nea.wait_for_line(r"SIGINT received: shutting down gracefully")
        # The server is draining now; the request still gets its body and its response.
        client.sendall(b"67890")
        while chunk := client.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"done 10\n" in received
    assert received.endswith(b"0\r\n\r\n")  # the chunked response was completed
    assert nea.wait_exit() == 0


def test_second_sigint_forces_the_exit(start_nea: StartNea) -> None:
    nea = start_nea("nea_test_apps:held_app", *HELD, "--port", "0")
    address = nea.wait_running()
    with socket.create_connection(address, timeout=WAIT_SECONDS) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
        read_until(client, b"first part received")
        nea.send_signal(signal.SIGINT)
        nea.wait_for_line(r"SIGINT received: shutting down gracefully")
        nea.send_signal(signal.SIGINT)
        nea.wait_for_line(r"SIGINT received again: forcing exit")
        assert nea.wait_exit() == 0
        try:
            rest = client.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert b"done" not in rest  # the held request was cancelled, not finished


def test_lifespan_startup_failure_exits_3() -> None:
    result = run_nea("nea_test_apps:failing_startup_app", *APP_DIR, "--port", "0")
    assert result.returncode == 3, result.stderr
    assert "database unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_lifespan_startup_failure_in_a_worker_exits_3() -> None:
    result = run_nea("nea_test_apps:failing_startup_app", *APP_DIR, "--port", "0", "--workers", "2")
    assert result.returncode == 3, result.stderr
    assert "database unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_tls(start_nea: StartNea, tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    nea = start_nea(
        "nea_test_apps:pid_app", *APP_DIR, "--port", "0",
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
    )  # fmt: skip
    match = nea.wait_for_line(r"nea running on https://127\.0\.0\.1:(\d+)")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with (
        socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=WAIT_SECONDS) as raw,
        client_context.wrap_socket(raw, server_hostname="127.0.0.1") as client,
    ):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := client.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(str(nea.process.pid).encode())
    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0


def test_nea_run_from_python() -> None:
    import subprocess
    import sys

    code = (
        "import nea; nea.run('nea_test_apps:pid_app', "
        f"app_dir={str(APPS_DIR)!r}, port=0, timeout_graceful_shutdown=5.0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # bounded by pytest-timeout if nea never logs
        while "nea running on" not in line:
            assert line, "nea.run exited before it started"
            line = process.stderr.readline()
        assert line.startswith("INFO:     nea running on http://127.0.0.1:")  # run() set up logs
        port = int(line.rsplit(":", 1)[1])
        assert get(("127.0.0.1", port)) == (200, str(process.pid).encode())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_SECONDS) == 0
    finally:
        process.kill()
        process.communicate(timeout=WAIT_SECONDS)
