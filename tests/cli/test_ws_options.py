"""The ``--ws*`` options: uvicorn's meanings and defaults, ``NEA_*`` variables, and one-line
errors naming the option."""

from __future__ import annotations

import pytest

from nea import ConfigError
from nea._http.backends import websocket_backend
from nea.config import Config

from .test_uvicorn_parity import parse


def test_defaults_are_uvicorns() -> None:
    config = parse("main:app")
    assert config.ws == "auto"
    assert config.ws_max_size == 16 * 1024 * 1024
    assert config.ws_max_queue == 32
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (20.0, 20.0)
    assert config.ws_per_message_deflate is True
    assert (config.ws_slots, config.ws_budget) == (100, 8 * 1024 * 1024)


def test_options_and_environment_reach_config() -> None:
    config = parse(
        "main:app", "--ws", "wsproto", "--ws-max-size", "1MiB", "--ws-max-queue", "4",
        "--ws-ping-interval", "none", "--ws-ping-timeout", "2.5",
        "--no-ws-per-message-deflate", "--ws-slots", "7",
        environ={"NEA_WS_BUDGET": "2MiB"},
    )  # fmt: skip
    assert config.ws == "wsproto" and config.ws_max_size == 1024 * 1024
    assert config.ws_max_queue == 4 and config.ws_slots == 7
    assert config.ws_ping_interval == 0.0 and config.ws_ping_timeout == 2.5
    assert config.ws_per_message_deflate is False
    assert config.ws_budget == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ws": "zz"}, "--ws: expected one of auto, none, websockets, wsproto, got 'zz'"),
        ({"ws_max_size": "lots"}, "--ws-max-size: expected a size"),
        ({"ws_max_queue": 0}, "--ws-max-queue: expected a whole number at least 1, got 0"),
        ({"ws_slots": -1}, "--ws-slots: expected a whole number at least 1, got -1"),
        ({"ws_budget": 0}, "--ws-budget: expected a size of at least 1 byte(s), got 0"),
        ({"ws_ping_timeout": -1.0}, "--ws-ping-timeout: expected a non-negative number"),
    ],
)
def test_bad_values_name_the_option(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(app="main:app", **changes)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_backend_registry() -> None:
    assert websocket_backend("none") is None
    assert websocket_backend("auto") == "websockets"  # both installed: uvicorn's preference
    assert websocket_backend("wsproto") == "wsproto"
    assert websocket_backend("websockets") == "websockets"
