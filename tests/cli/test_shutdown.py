"""Graceful shutdown of the real ``nea`` process: the port refuses new connections at once,
the request in flight finishes with ``connection: close``, ``--timeout-graceful-shutdown``
bounds the drain; with one process and under ``--workers``."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import pytest

from .helpers import APPS_DIR, WAIT_SECONDS, NeaProcess

StartNea = Callable[..., NeaProcess]
# --buffer-request-body 0: the request goes to the app as soon as its head is read, so the
# app's line says the request is in flight.
APP = ("nea_test_apps:body_app", "--app-dir", str(APPS_DIR), "--buffer-request-body", "0")
HEAD = b"POST /in-flight HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345"


def read_all(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(4096):
        received += chunk
    return received


def assert_refused(address: tuple[str, int]) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT_SECONDS).close()


def test_sigterm_refuses_new_connections_and_finishes_the_request(start_nea: StartNea) -> None:
    nea = start_nea(*APP, "--port", "0")
    address = nea.wait_running()
    with socket.create_connection(address, timeout=WAIT_SECONDS) as client:
        client.sendall(HEAD)
        nea.wait_for_line(r"body_app: reading /in-flight")
        nea.send_signal(signal.SIGTERM)
        nea.wait_for_line(r"Shutting down")  # logged once the server stopped listening
        assert_refused(address)
        client.sendall(b"67890")
        response = read_all(client)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close\r\n" in response
    assert response.endswith(b"received 10\n")
    assert nea.wait_exit() == 0


def test_timeout_graceful_shutdown_bounds_the_drain(start_nea: StartNea) -> None:
    nea = start_nea(*APP, "--port", "0", "--timeout-graceful-shutdown", "0.2")
    address = nea.wait_running()
    with socket.create_connection(address, timeout=WAIT_SECONDS) as client:
        client.sendall(HEAD)  # and never the rest
        nea.wait_for_line(r"body_app: reading /in-flight")
        nea.send_signal(signal.SIGTERM)
        nea.wait_for_line(r"Cancelling 1 in-flight request\(s\)")
        assert nea.wait_exit() == 0
        try:
            rest = read_all(client)
        except ConnectionResetError:
            rest = b""
    assert b"received" not in rest


def test_workers_refuse_new_connections_and_finish_the_request(start_nea: StartNea) -> None:
    nea = start_nea(*APP, "--port", "0", "--workers", "2")
    match = nea.wait_for_line(r"starting 2 workers on http://127\.0\.0\.1:(\d+)")
    address = ("127.0.0.1", int(match.group(1)))
    for _ in range(2):
        nea.wait_for_line(r"nea running on")
    with socket.create_connection(address, timeout=WAIT_SECONDS) as client:
        client.sendall(HEAD)
        nea.wait_for_line(r"body_app: reading /in-flight")
        nea.send_signal(signal.SIGTERM)
        nea.wait_for_line(r"stopping 2 worker\(s\) gracefully")
        for _ in range(2):
            nea.wait_for_line(r"Shutting down")  # each worker stopped listening
        assert_refused(address)
        client.sendall(b"67890")
        response = read_all(client)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close\r\n" in response
    assert response.endswith(b"received 10\n")
    assert nea.wait_exit() == 0
