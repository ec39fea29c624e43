import asyncio

import pytest

from nea import ConfigError
from nea._loops import loop_factory, resolve_loop, run_on_loop


async def _loop_type_name() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_prefers_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert resolve_loop("auto") == "uvloop"
    assert run_on_loop(_loop_type_name(), loop="auto").startswith("uvloop")


def test_asyncio_loop_is_the_standard_one() -> None:
    assert run_on_loop(_loop_type_name(), loop="asyncio").startswith("asyncio")


def test_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^--loop: expected one of auto, asyncio, uvloop"):
        loop_factory("trio")


def test_missing_uvloop_is_a_config_error_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes "import uvloop" fail
    assert resolve_loop("auto") == "asyncio"
    coroutine = _loop_type_name()
    with pytest.raises(ConfigError, match="pip install uvloop"):
        run_on_loop(coroutine, loop="uvloop")


def test_leftover_tasks_are_cancelled_and_the_loop_closed() -> None:
    cancelled = []
    loops = []

    async def main() -> int:
        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)  # let the task start so it is waiting when main returns
        loops.append(asyncio.get_running_loop())
        return 7

    assert run_on_loop(main(), loop="asyncio") == 7
    assert cancelled == [True]
    assert loops[0].is_closed()


def test_exceptions_from_main_propagate() -> None:
    async def main() -> None:
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        run_on_loop(main(), loop="asyncio")
