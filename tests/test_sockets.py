import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from nea import Config
from nea._sockets import BindError, bind_socket, create_ssl_context, describe_address


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


def _tls_files(tmp_path: Path, password: bytes) -> tuple[Any, Path, Path, Path]:
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    cert, keyfile, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    keyfile.write_bytes(encrypted)
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, cert, keyfile, ca_file


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """A TLS handshake between the two contexts over memory BIOs; raises ssl.SSLError."""
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    s = server.wrap_bio(pipes[0], pipes[1], server_side=True)
    c = client.wrap_bio(pipes[2], pipes[3], server_hostname="127.0.0.1")
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        pipes[2].write(pipes[1].read())
        pipes[0].write(pipes[3].read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_tls_options_password_client_certificates_and_ciphers(tmp_path: Path) -> None:
    ca, cert, key, ca_file = _tls_files(tmp_path, b"secret")
    config = Config(
        app="m:a",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_keyfile_password="secret",
        ssl_cert_reqs=int(ssl.CERT_REQUIRED),
        ssl_ca_certs=str(ca_file),
        ssl_ciphers="ECDHE+AESGCM",
    )
    context = create_ssl_context(config)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED

    client = ssl.create_default_context()
    ca.configure_trust(client)
    with pytest.raises(ssl.SSLError):  # no client certificate: refused
        _handshake(context, client)
    ca.issue_cert("client@example.com").configure_cert(client)
    _handshake(create_ssl_context(config), client)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ssl_keyfile_password": "wrong"}, "--ssl-certfile/--ssl-keyfile: cannot load"),
        ({"ssl_cert_reqs": 7}, "--ssl-cert-reqs: expected 0, 1 or 2, got 7"),
        ({"ssl_ciphers": "NO-SUCH-CIPHER"}, "--ssl-ciphers: no usable cipher in 'NO-SUCH-CIPHER'"),
        ({"ssl_ca_certs": "/nonexistent/ca.pem"}, "--ssl-ca-certs: cannot load"),
    ],
)
def test_bad_tls_options_name_the_option(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    _, cert, key, _ = _tls_files(tmp_path, b"secret")
    options: dict[str, Any] = {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_keyfile_password": "secret",
        **changes,
    }
    with pytest.raises(BindError) as caught:
        create_ssl_context(Config(app="m:a", **options))
    assert str(caught.value).startswith(message)
