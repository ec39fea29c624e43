"""Registers the ``needs_integration`` marker used by the example tests (see helpers.py)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_integration: runs an example under nea.Server with budgets; needs the server, "
        "meter and admission branches merged",
    )
