"""One source for every default: the CLI, ``nea.run``, the middleware and the gunicorn
worker all end up with ``Config``'s defaults, written once in ``nea.config``."""

from __future__ import annotations

import dataclasses
import inspect

from nea import Config
from nea.cli import build_parser, config_from_args, environment_values
from nea.config import (
    DEFAULT_BUDGET_BYTES,
    DEFAULT_QUEUE_TIMEOUT_SECONDS,
    DEFAULT_SLOTS,
    default_queue,
)
from nea.middleware import MemoryBudgetMiddleware

MiB = 1024 * 1024


def test_config_holds_the_defaults() -> None:
    config = Config(app="m:a")
    assert (config.budget, config.slots, config.queue_timeout) == (
        DEFAULT_BUDGET_BYTES,
        DEFAULT_SLOTS,
        DEFAULT_QUEUE_TIMEOUT_SECONDS,
    )
    assert config.queue_size == default_queue(DEFAULT_SLOTS) == 2 * DEFAULT_SLOTS


def test_budget_is_parsed_once_into_bytes() -> None:
    config = Config(app="m:a", budget="16MiB", memory_limit="1GiB")
    assert (config.budget, config.memory_limit) == (16 * MiB, 1024 * MiB)
    assert type(config.budget) is int
    assert config.replace(slots=2).budget == 16 * MiB


def test_cli_leaves_defaults_to_config() -> None:
    args = build_parser().parse_args(["m:a"])
    # Nothing given: every option value is None, so Config's field defaults apply.
    assert all(value is None for name, value in vars(args).items() if name != "app")
    assert config_from_args(args, {}) == Config(app="m:a")
    assert environment_values({}) == {}


def test_middleware_defaults_are_configs() -> None:
    parameters = inspect.signature(MemoryBudgetMiddleware).parameters
    assert parameters["budget"].default == DEFAULT_BUDGET_BYTES
    assert parameters["queue_timeout"].default == DEFAULT_QUEUE_TIMEOUT_SECONDS

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    middleware = MemoryBudgetMiddleware(app, slots=3)
    assert middleware.admission.queue == default_queue(3)
    assert middleware.admission.limit == DEFAULT_BUDGET_BYTES


def test_run_options_are_config_fields() -> None:
    from nea._run import build_config

    fields = {field.name for field in dataclasses.fields(Config)}
    assert "budget" in fields
    assert build_config("m:a", {}) == Config(app="m:a")
