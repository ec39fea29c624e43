"""Scope construction and trusted proxy headers."""

from __future__ import annotations

from nea._http.parser import ParserLimits, RequestHead, make_head
from nea._http.scope import TrustedProxies, apply_proxy_headers, build_scope


def head(target: bytes, *headers: tuple[bytes, bytes]) -> RequestHead:
    return make_head("GET", target, "1.1", [(b"host", b"x"), *headers], ParserLimits(65536))


def scope_for(target: bytes, root_path: str = "") -> dict[str, object]:
    return build_scope(
        head(target),
        scheme="http",
        client=("1.2.3.4", 5),
        server=("127.0.0.1", 80),
        root_path=root_path,
        state={"a": 1},
    )


def test_scope_has_every_spec_key() -> None:
    scope = scope_for(b"/caf%C3%A9%20x?q=%20")
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["path"] == "/café x"
    assert scope["raw_path"] == b"/caf%C3%A9%20x"
    assert scope["query_string"] == b"q=%20"
    assert scope["method"] == "GET" and scope["http_version"] == "1.1"
    assert scope["client"] == ("1.2.3.4", 5) and scope["server"] == ("127.0.0.1", 80)
    assert scope["headers"] == [(b"host", b"x")]
    assert scope["extensions"] == {} and scope["state"] == {"a": 1}


def test_root_path_prefixes_path_and_absolute_form_is_reduced() -> None:
    scope = scope_for(b"/items", root_path="/api")
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == (
        "/api",
        "/api/items",
        b"/api/items",
    )
    assert scope_for(b"http://example.com/p?x=1")["path"] == "/p"


def test_state_is_a_copy_per_request() -> None:
    state = {"a": 1}
    scope = build_scope(
        head(b"/"), scheme="http", client=None, server=None, root_path="", state=state
    )
    scope["state"]["a"] = 2  # type: ignore[index]
    assert state == {"a": 1}


def test_proxy_headers_only_from_trusted_peers() -> None:
    h = head(b"/", (b"x-forwarded-for", b"9.9.9.9, 10.0.0.1"), (b"x-forwarded-proto", b"https"))
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert apply_proxy_headers(h, ("127.0.0.1", 1), "http", trusted) == (("9.9.9.9", 0), "https")
    assert apply_proxy_headers(h, ("8.8.8.8", 1), "http", trusted) == (("8.8.8.8", 1), "http")
    everyone = TrustedProxies(["*"])
    assert apply_proxy_headers(h, ("8.8.8.8", 1), "http", everyone)[1] == "https"
