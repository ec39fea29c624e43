"""A pytest plugin that makes Starlette's and FastAPI's test suites use ``nea.testing.Client``.

Loaded by ``tests/compat/run_suites.py`` with ``-p nea_compat_plugin`` (this directory on
``PYTHONPATH``), so it runs before the suites import ``starlette.testclient`` or
``fastapi.testclient``: it replaces ``starlette.testclient.TestClient`` with a subclass of
``nea.testing.Client`` that takes Starlette's constructor arguments (``base_url`` is the
second positional argument there; nea's is ``budget``). ``fastapi.testclient`` re-exports
Starlette's name, so FastAPI's tests get nea's client too.

``NEA_COMPAT_BUDGET`` sets each request's budget (default nea's ``32MiB``; ``none`` for
no budget). Without ``NEA_COMPAT_CLIENT=nea`` the plugin changes nothing, so the same run
can measure Starlette's own client.
"""

from __future__ import annotations

import os
from typing import Any

import starlette.testclient

from nea.testing import Client

_BUDGET = os.environ.get("NEA_COMPAT_BUDGET", "32MiB")


class NeaTestClient(Client):
    """``nea.testing.Client`` with ``starlette.testclient.TestClient``'s signature."""

    __test__ = False

    def __init__(
        self,
        app: Any,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        root_path: str = "",
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        cookies: Any = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
    ) -> None:
        super().__init__(
            app,
            budget=None if _BUDGET.lower() == "none" else _BUDGET,
            base_url=base_url,
            raise_server_exceptions=raise_server_exceptions,
            root_path=root_path,
            backend=backend,
            backend_options=backend_options,
            cookies=cookies,
            headers=headers,
            follow_redirects=follow_redirects,
            client=client,
        )


if os.environ.get("NEA_COMPAT_CLIENT", "nea") == "nea":
    starlette.testclient.TestClient = NeaTestClient  # type: ignore[misc,assignment]
