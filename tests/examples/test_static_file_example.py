"""examples/static_file.py: serves the project's pyproject.toml from any working directory."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import httpx
import pytest

from .helpers import EXAMPLES_DIR, load_example, nea_server

PYPROJECT = EXAMPLES_DIR.parent / "pyproject.toml"


@pytest.fixture(scope="module")
def static() -> ModuleType:
    return load_example("static_file")


def test_the_path_is_resolved_relative_to_the_example(
    static: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert PYPROJECT.resolve() == load_example("static_file").PYPROJECT


async def _check(client: httpx.AsyncClient) -> None:
    response = await client.get("/pyproject.toml")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == str(PYPROJECT.stat().st_size)
    assert response.content == PYPROJECT.read_bytes()
    assert b'name = "nea"' in response.content


@pytest.mark.asyncio
async def test_serves_pyproject_over_asgi(static: ModuleType) -> None:
    transport = httpx.ASGITransport(app=static.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        await _check(client)


@pytest.mark.needs_integration
@pytest.mark.asyncio
async def test_serves_pyproject_under_nea(static: ModuleType) -> None:
    async with nea_server(static.app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        await _check(client)
