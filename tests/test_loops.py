import asyncio

import pytest

import nea
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


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_loop_machinery_in_a_budget_is_charged_never_refused(native: str, loop_name: str) -> None:
    """A callback scheduled from inside a budget runs in the budget's context, called by the
    loop itself: with uvloop (written in C) the innermost Python frame is nea's own
    ``run_on_loop``, which must count as the loop's dispatch, as asyncio's ``Handle._run``
    does. Refusing there, or delivering the trip there, would raise inside the loop instead
    of in the task: the allocation succeeds, and the task sees the trip."""
    if loop_name == "uvloop":
        pytest.importorskip("uvloop")

    async def main() -> tuple[int | str, str]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int | str] = loop.create_future()

        def callback() -> None:
            try:
                done.set_result(len(bytearray(64 * 1024)))  # over the 16 KiB budget
            except MemoryError:
                done.set_result("refused")

        try:
            async with nea.budget("16KiB"):
                loop.call_soon(callback)
                await asyncio.wait([done])
        except nea.BudgetExceeded:
            return done.result(), "tripped"
        return done.result(), "not tripped"

    assert run_on_loop(main(), loop=loop_name) == (64 * 1024, "tripped")
