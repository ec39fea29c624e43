import socket

import pytest

from nea import Config
from nea._sockets import BindError, bind_socket, describe_address


def test_port_zero_binds_a_free_port() -> None:
    sock = bind_socket(Config(app="m:a", port=0))
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert describe_address(sock) == f"127.0.0.1:{port}"
    finally:
        sock.close()


def test_address_in_use_is_one_line_naming_the_address() -> None:
    first = bind_socket(Config(app="m:a", port=0))
    try:
        port = first.getsockname()[1]
        with pytest.raises(
            BindError, match=rf"^cannot listen on 127.0.0.1:{port}: address already in use$"
        ):
            bind_socket(Config(app="m:a", port=port))
    finally:
        first.close()


def test_unix_socket_replaces_a_stale_socket_file(tmp_path: object) -> None:
    path = f"{tmp_path}/nea.sock"
    for _ in range(2):
        sock = bind_socket(Config(app="m:a", uds=path))
        assert sock.family == socket.AF_UNIX
        assert describe_address(sock) == f"unix:{path}"
        sock.close()


def test_fd_adopts_an_inherited_socket() -> None:
    original = socket.create_server(("127.0.0.1", 0))
    try:
        sock = bind_socket(Config(app="m:a", fd=original.fileno()))
        assert sock.getsockname() == original.getsockname()
        sock.detach()
    finally:
        original.close()
