"""``ws_backend``: every WebSocket test runs once per frame engine (and, through
``backend``, once per HTTP parser)."""

from __future__ import annotations

import pytest

WS_BACKENDS = ["wsproto", "websockets"]


@pytest.fixture(params=WS_BACKENDS)
def ws_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
