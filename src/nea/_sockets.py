"""Listening sockets and the TLS context, made from a ``Config``.

Owns: binding (``--host/--port``, ``--uds``, ``--fd``, ``--backlog``) and the server-side
``ssl.SSLContext``. Must not import the server, the HTTP core or asyncio: the supervisor binds
once in the parent process and hands the sockets to every worker.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat

from nea._errors import NeaError
from nea.config import Config


class BindError(NeaError, OSError):
    """The listening address could not be bound (in use, no permission, bad fd)."""


def bind_socket(config: Config) -> socket.socket:
    """Return a listening, non-blocking socket for ``config``.

    Raises ``BindError`` with a one-line message naming the address when binding fails.
    The caller owns the socket and must close it.
    """
    if config.fd is not None:
        return _from_fd(config.fd)
    if config.uds is not None:
        return _bind_unix(config.uds, config.backlog)
    return _bind_tcp(config.host, config.port, config.backlog)


def describe_address(sock: socket.socket) -> str:
    """``http://127.0.0.1:8000``-style text for logs (``unix:/path`` for Unix sockets)."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{host}:{port}"


def create_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server TLS context for ``--ssl-certfile/--ssl-keyfile``, or ``None`` without them.

    ``--ssl-keyfile-password`` unlocks the key, ``--ssl-version`` picks the protocol constant
    (the default keeps ``ssl.create_default_context``'s settings), ``--ssl-cert-reqs`` and
    ``--ssl-ca-certs`` verify client certificates, ``--ssl-ciphers`` sets the cipher list.
    Raises ``BindError`` naming the option when a file or value is unusable.
    """
    if config.ssl_certfile is None:
        return None
    try:
        if config.ssl_version == ssl.PROTOCOL_TLS_SERVER:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        else:
            context = ssl.SSLContext(ssl._SSLMethod(config.ssl_version))
    except (ValueError, ssl.SSLError) as exc:
        raise BindError(f"--ssl-version: not a usable protocol ({exc})") from exc
    try:
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, password=config.ssl_keyfile_password
        )
    except (OSError, ssl.SSLError) as exc:
        raise BindError(
            f"--ssl-certfile/--ssl-keyfile: cannot load {config.ssl_certfile!r}: {exc}"
        ) from exc
    try:
        context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    except ValueError as exc:
        raise BindError(f"--ssl-cert-reqs: expected 0, 1 or 2, got {config.ssl_cert_reqs}") from exc
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise BindError(f"--ssl-ca-certs: cannot load {config.ssl_ca_certs!r}: {exc}") from exc
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError as exc:
            raise BindError(f"--ssl-ciphers: no usable cipher in {config.ssl_ciphers!r}") from exc
    context.set_alpn_protocols(["http/1.1"])
    return context


def _bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {where}: {reason}") from exc
    sock.setblocking(False)
    return sock


def _bind_unix(path: str, backlog: int) -> socket.socket:
    # A stale socket file from a previous run would make bind fail; remove only sockets.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on unix:{path}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def _from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"--fd {fd}: not a usable socket: {exc.strerror}") from exc
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"--fd {fd}: expected a stream socket")
    sock.setblocking(False)
    return sock
