"""A pytest plugin that makes Starlette's and FastAPI's test suites use ``nea.testing.Client``.

Loaded by ``tests/compat/run_suites.py`` with ``-p nea_compat_plugin`` (this directory on
``PYTHONPATH``), so it runs before the suites import ``starlette.testclient`` or
``fastapi.testclient``: it replaces ``starlette.testclient.TestClient`` with a subclass of
``nea.testing.Client`` that takes Starlette's constructor arguments (``base_url`` is the
second positional argument there; nea's is ``budget``), and Starlette's
``WebSocketDenialResponse`` with nea's. ``fastapi.testclient`` re-exports
Starlette's name, so FastAPI's tests get nea's client too.

``NEA_COMPAT_BUDGET`` sets each request's budget (default nea's ``32MiB``; ``none`` for
no budget). Without ``NEA_COMPAT_CLIENT=nea`` the plugin changes nothing, so the same run
can measure Starlette's own client. ``NEA_COMPAT_REQUESTS=N`` prints, after the run, the
N requests with the highest peak (from each response's ``extensions["nea.budget"]``).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import starlette.testclient

from nea import format_size
from nea.testing import Client, WebSocketDenialResponse

_BUDGET = os.environ.get("NEA_COMPAT_BUDGET", "32MiB")
_TOP_REQUESTS = int(os.environ.get("NEA_COMPAT_REQUESTS", "0"))
# (peak, limit, "METHOD path", test id) of every request whose body was read by send().
_requests: list[tuple[int, int, str, str]] = []


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

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = super().send(request, **kwargs)
        stats = response.extensions.get("nea.budget")
        if _TOP_REQUESTS and stats is not None:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
            where = f"{request.method} {request.url.path}"
            _requests.append((stats.peak, stats.limit, where, test))
        return response


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TOP_REQUESTS:
        return
    top = sorted(_requests, reverse=True)[:_TOP_REQUESTS]
    terminalreporter.write_sep("=", f"nea's Client: top {_TOP_REQUESTS} requests by peak")
    terminalreporter.write_line(f"{'peak':>10}  {'budget':>10}  request  (test)")
    for peak, limit, where, test in top:
        line = f"{format_size(peak):>10}  {format_size(limit):>10}  {where}  ({test})"
        terminalreporter.write_line(line)


if os.environ.get("NEA_COMPAT_CLIENT", "nea") == "nea":
    starlette.testclient.TestClient = NeaTestClient  # type: ignore[misc,assignment]
    # The suites catch the denial response as Starlette's client's class; nea's client
    # raises its own (an ``httpx.Response``, where Starlette's is an ``httpx2.Response``).
    starlette.testclient.WebSocketDenialResponse = WebSocketDenialResponse  # type: ignore[misc]
