"""examples/state_machine_html.py: the update table on its own, and the app over ASGI."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import httpx
import pytest

from .helpers import load_example, nea_server, uvicorn_server


@pytest.fixture(scope="module")
def sm() -> ModuleType:
    return load_example("state_machine_html")


def test_update_reads_the_whole_body_then_sends_head_then_body(sm: ModuleType) -> None:
    model, command = sm.init()
    assert command == sm.ReceiveCmd()
    model, command = sm.update(model, sm.BodyChunk(size=3, more=True))
    assert (model, command) == (sm.Model("reading", 3), sm.ReceiveCmd())
    model, command = sm.update(model, sm.BodyChunk(size=4, more=False))
    assert (model, command) == (sm.Model("sending_head", 7), sm.SendCmd(sm.RESPONSE_START))
    model, command = sm.update(model, sm.Sent())
    assert (model, command) == (sm.Model("sending_body", 7), sm.SendCmd(sm.RESPONSE_BODY))
    model, command = sm.update(model, sm.Sent())
    assert (model, command) == (sm.Model("done", 7), sm.Stop())


@pytest.mark.parametrize("phase", ["reading", "sending_head", "sending_body"])
def test_a_client_gone_stops_in_any_phase(sm: ModuleType, phase: str) -> None:
    model, command = sm.update(sm.Model(phase), sm.ClientGone())
    assert model.phase == "done"
    assert command == sm.Stop()


def test_an_impossible_transition_is_an_error(sm: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="no transition from 'reading'"):
        sm.update(sm.Model("reading"), sm.Sent())


@pytest.mark.asyncio
async def test_the_driver_stops_without_sending_when_the_client_left(sm: ModuleType) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await sm.app({"type": "http", "method": "GET", "path": "/"}, receive, send)
    assert sent == []


async def _get_and_post(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/"),
        await client.post("/anything", content=b"x" * 100_000),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html"
        assert response.text == "<html>foobar</html>"


@pytest.mark.asyncio
async def test_answers_foobar_html_over_asgi(sm: ModuleType) -> None:
    transport = httpx.ASGITransport(app=sm.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        await _get_and_post(client)


@pytest.mark.asyncio
async def test_answers_foobar_html_under_uvicorn(sm: ModuleType) -> None:
    async with uvicorn_server(sm.app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        await _get_and_post(client)


@pytest.mark.needs_integration
@pytest.mark.asyncio
async def test_answers_foobar_html_under_nea(sm: ModuleType) -> None:
    async with nea_server(sm.app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        await _get_and_post(client)
