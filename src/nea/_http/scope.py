"""The ASGI ``http`` scope of a request, and trusted proxy headers.

Owns: scope construction per the ASGI 3.0 HTTP spec (path decoding, ``root_path``, client
and server addresses) and ``--proxy-headers``/``--forwarded-allow-ips`` (``X-Forwarded-For``,
``X-Forwarded-Proto`` honoured only from trusted peers). Must not import asyncio, socket
or anyio.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import unquote

from nea._http.parser import RequestHead

# 2.3: ``send`` after a client disconnect is a no-op; 2.4 would make it raise OSError.
ASGI_VERSIONS: Final = {"version": "3.0", "spec_version": "2.3"}
WEBSOCKET_ASGI_VERSIONS: Final = {"version": "3.0", "spec_version": "2.4"}

Address = tuple[str, int]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which peers may set ``X-Forwarded-*``: ``*``, addresses or networks (CIDR)."""

    __slots__ = ("_all", "_hosts", "_networks")

    def __init__(self, entries: Iterable[str]) -> None:
        self._all = False
        self._hosts: set[str] = set()
        self._networks: list[_Network] = []
        for raw in entries:
            for entry in (part.strip() for part in raw.split(",")):
                if entry == "*":
                    self._all = True
                elif "/" in entry:
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                elif entry:
                    self._hosts.add(entry)

    def trusts(self, host: str | None) -> bool:
        if self._all:
            return True
        if host is None:
            return False
        if host in self._hosts:
            return True
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def apply_proxy_headers(
    head: RequestHead,
    client: Address | None,
    scheme: str,
    proxies: TrustedProxies,
) -> tuple[Address | None, str]:
    """``(client, scheme)`` after honouring ``X-Forwarded-*`` from a trusted peer.

    The client is the right-most ``X-Forwarded-For`` entry that is not itself a trusted
    proxy (entries further left can be forged by the client).
    """
    if not proxies.trusts(client[0] if client else None):
        return client, scheme
    for name, value in head.headers:
        if name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
            if proto in ("http", "https", "ws", "wss"):
                scheme = "https" if proto in ("https", "wss") else "http"
        elif name == b"x-forwarded-for":
            hosts = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
            chosen = None
            for host in reversed(hosts):
                chosen = host
                if not proxies.trusts(host):
                    break
            if chosen is not None:
                client = (chosen, 0)
    return client, scheme


def build_scope(
    head: RequestHead,
    scheme: str,
    client: Address | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ASGI ``http`` scope for ``head``.

    ``path`` and ``raw_path`` include ``root_path`` (as uvicorn does and Starlette expects);
    ``state`` is a shallow copy of the lifespan state, so one request cannot rebind keys
    for the next.
    """
    target = head.target
    if target[:1] != b"/" and b"://" in target[:10]:
        # absolute-form (RFC 9112 §3.2.2): keep only the path and query
        slash = target.find(b"/", target.index(b"://") + 3)
        target = target[slash:] if slash != -1 else b"/"
    raw_path, _, query_string = target.partition(b"?")
    if b"%" in raw_path:
        path = unquote(raw_path.decode("ascii", "replace"))
    else:
        path = raw_path.decode("latin-1")
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSIONS,
        "http_version": head.http_version,
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": head.method,
        "root_path": root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": head.headers,
        "extensions": {},
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


def websocket_scope(http_scope: dict[str, Any], ws_extensions: bool) -> dict[str, Any]:
    """The ASGI ``websocket`` scope (spec 2.4) for a handshake whose ``http`` scope this is:
    ``ws``/``wss`` for the scheme, no method, the offered ``subprotocols`` in order, and the
    ``websocket.http.response`` extension (the denial response) when ``ws_extensions``."""
    scope = dict(http_scope)
    del scope["method"]
    scope["type"] = "websocket"
    scope["asgi"] = WEBSOCKET_ASGI_VERSIONS
    scope["scheme"] = "wss" if http_scope["scheme"] == "https" else "ws"
    offered: list[str] = []
    for name, value in http_scope["headers"]:
        if name == b"sec-websocket-protocol":
            offered.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    scope["subprotocols"] = offered
    scope["extensions"] = {"websocket.http.response": {}} if ws_extensions else {}
    return scope
