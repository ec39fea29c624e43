"""What the server does when the app misbehaves: failures, early returns, bad message order."""

from __future__ import annotations

import logging

import pytest
from tests.conftest import run_server

from nea._types import Receive, Scope, Send

pytestmark = pytest.mark.asyncio

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_error_before_response_is_500_with_traceback(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async with run_server(app, http=backend) as srv:
        raw = await srv.exchange(GET)
    assert raw.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert record.getMessage() == "Exception in ASGI application"
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_error_after_response_start_closes_the_connection(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom")

    async with run_server(app, http=backend) as srv:
        raw = await srv.exchange(GET)
    assert b"500" not in raw.split(b"\r\n")[0]
    assert not raw.endswith(b"0\r\n\r\n")  # never a clean end of the chunked body
    assert "Exception in ASGI application" in errors(caplog)


async def test_app_returning_without_response_is_500(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async with run_server(app, http=backend) as srv:
        raw = await srv.exchange(GET)
    assert raw.startswith(b"HTTP/1.1 500 ")
    assert "ASGI callable returned without starting a response" in errors(caplog)


async def test_out_of_order_message_is_named_and_closes(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.body", "body": b"no start"})

    async with run_server(app, http=backend) as srv:
        raw = await srv.exchange(GET)
    assert raw == b""
    assert any(
        "expected 'http.response.start', got 'http.response.body'" in m for m in errors(caplog)
    )


@pytest.mark.parametrize(("declared", "sent"), [(b"3", b"abcd"), (b"10", b"abc")])
async def test_content_length_mismatch_closes(
    backend: str, caplog: pytest.LogCaptureFixture, declared: bytes, sent: bytes
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", declared)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": sent})

    async with run_server(app, http=backend) as srv:
        raw = await srv.exchange(GET + GET)
    assert raw.count(b"HTTP/1.1") <= 1  # the second request is never answered
    assert any("content-length" in m for m in errors(caplog))
