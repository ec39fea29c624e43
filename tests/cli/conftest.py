"""Fixtures for the CLI tests: nea subprocesses that are always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from .helpers import NeaProcess


@pytest.fixture
def start_nea() -> Iterator[Callable[..., NeaProcess]]:
    """Factory fixture: ``start_nea(*args)`` starts nea; every process is killed at teardown."""
    started: list[NeaProcess] = []

    def start(*args: str, pass_fds: Sequence[int] = ()) -> NeaProcess:
        process = NeaProcess(args, pass_fds=pass_fds)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
