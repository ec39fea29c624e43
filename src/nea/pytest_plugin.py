"""nea's pytest plugin: memory budgets for tests.

Owns: the ``memory_budget`` marker, the ``memory_budget`` fixture, the ``memory_budget``
ini option and the ``--memory-summary N`` report. pytest loads this module through the
``pytest11`` entry point in every run where nea is installed, so importing it must stay
cheap: it must not import the server, httpx or ``nea.testing``, and it imports the meter
only when a test actually runs inside a budget.

How a test runs inside its budget: the test function (``item.obj``) is replaced, for the
duration of the call, by a wrapper that enters the budget *inside* the function. For a
coroutine test the wrapper is itself a coroutine function, so the budget is entered in
whatever task the async plugin runs the test body in. Entering it around the call instead
would miss anyio's pytest plugin, which runs every test body in one long-lived runner task
whose context was copied before the test started.
"""

from __future__ import annotations

import functools
import inspect
import sys
import unittest
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from nea._sizes import format_size, parse_size

if TYPE_CHECKING:
    from nea.meter import Budget

MARKER = "memory_budget"
INI_OPTION = "memory_budget"
# The key under which each test's peak travels in ``report.user_properties`` (so it
# also reaches the controller under pytest-xdist and lands in junitxml).
PEAK_PROPERTY = "nea.memory_peak"
LIMIT_PROPERTY = "nea.memory_limit"
# Present when the test's budget tripped: the refused size in bytes (0 when unknown: the
# tracemalloc meter refuses nothing, it finds the limit passed on exit).
TRIPPED_PROPERTY = "nea.memory_tripped_refused"
# The limit of the measuring-only budget that ``--memory-summary`` gives tests that have
# no budget of their own: large enough never to refuse anything.
UNLIMITED = sys.maxsize


@dataclass(frozen=True)
class _Plan:
    """The budget one test runs in: ``limit`` in bytes, ``source`` for messages."""

    limit: int
    source: str
    enforced: bool


@dataclass(frozen=True)
class _Measured:
    nodeid: str
    peak: int
    limit: int | None
    refused: int | None = None  # set when the budget tripped (see TRIPPED_PROPERTY)


_plan_key = pytest.StashKey[_Plan]()
_default_key = pytest.StashKey["int | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI_OPTION,
        help="nea: default memory budget for every test, e.g. 64MiB "
        "(the memory_budget marker overrides it)",
        default="",
    )
    group = parser.getgroup("nea", "nea memory budgets")
    group.addoption(
        "--memory-summary",
        action="store",
        type=int,
        default=0,
        metavar="N",
        dest="nea_memory_summary",
        help="nea: after the run, list the N tests with the highest memory peak "
        "(tests without a budget are measured too)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(limit): run the test body inside a nea memory budget of `limit` "
        "(bytes or a size such as '24MiB'); None runs it without the ini default budget",
    )
    summary: int = config.option.nea_memory_summary
    if summary < 0:
        raise pytest.UsageError(f"--memory-summary expects a number of tests >= 0, got {summary}")
    raw: str = config.getini(INI_OPTION).strip()
    default: int | None = None
    if raw and raw.lower() != "none":
        try:
            default = parse_size(raw)
        except ValueError as exc:
            raise pytest.UsageError(f"ini option {INI_OPTION}: {exc}") from None
    config.stash[_default_key] = default
    if summary > 0:
        config.pluginmanager.register(_Summary(summary), "nea-memory-summary")


def _marker_limit(marker: pytest.Mark) -> int | None:
    """The limit a ``memory_budget`` marker asks for; ``None`` means no budget."""
    args = list(marker.args)
    if "limit" in marker.kwargs:
        args.append(marker.kwargs["limit"])
    unknown = sorted(set(marker.kwargs) - {"limit"})
    if unknown or len(args) != 1:
        raise ValueError(
            f"@pytest.mark.{MARKER} takes exactly one limit, e.g. "
            f'@pytest.mark.{MARKER}("24MiB"); got args={marker.args!r} kwargs={marker.kwargs!r}'
        )
    if args[0] is None:
        return None
    return parse_size(args[0])


def _plan_for(item: pytest.Item) -> _Plan | None:
    """Which budget ``item`` runs in, or ``None`` when it is neither budgeted nor measured."""
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        limit = _marker_limit(marker)
        source = f"@pytest.mark.{MARKER}"
    else:
        limit = item.config.stash[_default_key]
        source = f"the {INI_OPTION} ini option"
    if limit is not None:
        return _Plan(limit=limit, source=source, enforced=True)
    if item.config.option.nea_memory_summary > 0:
        return _Plan(limit=UNLIMITED, source="--memory-summary", enforced=False)
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Resolving the plan in setup turns a malformed marker into an error for this test
    # alone, reported before any fixture work is charged to anybody.
    if not isinstance(item, pytest.Function):
        return
    try:
        plan = _plan_for(item)
    except ValueError as exc:
        raise pytest.fail.Exception(f"{item.nodeid}: {exc}", pytrace=False) from None
    if plan is not None:
        item.stash[_plan_key] = plan


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    plan = item.stash.get(_plan_key, None)
    if plan is None or not isinstance(item, pytest.Function):
        return (yield)
    if item.cls is not None and issubclass(item.cls, unittest.TestCase):
        # unittest items call the TestCase method themselves, never ``item.obj``: meter
        # the whole call (setUp and tearDown included, unittest runs them as one).
        return (yield from _around_call(plan, item))
    original = item.obj
    item.obj = _wrap(original, plan, item)
    try:
        return (yield)
    finally:
        item.obj = original


def _wrap(func: Callable[..., Any], plan: _Plan, item: pytest.Item) -> Callable[..., Any]:
    """``func`` made to run its body inside ``plan``'s budget (see the module docstring)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            budget = _new_budget(plan)
            try:
                async with budget:
                    return await func(*args, **kwargs)
            except BaseException as exc:
                _explain_failure(exc, budget, plan, item)
                raise
            finally:
                _record(budget, plan, item)

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        budget = _new_budget(plan)
        try:
            with budget:
                return func(*args, **kwargs)
        except BaseException as exc:
            _explain_failure(exc, budget, plan, item)
            raise
        finally:
            _record(budget, plan, item)

    return run


def _around_call(plan: _Plan, item: pytest.Item) -> Generator[None, object, object]:
    budget = _new_budget(plan)
    try:
        with budget:
            return (yield)
    except BaseException as exc:
        _explain_failure(exc, budget, plan, item)
        raise
    finally:
        _record(budget, plan, item)


def _new_budget(plan: _Plan) -> Budget:
    from nea.meter import budget

    return budget(plan.limit)


def _record(budget: Budget, plan: _Plan, item: pytest.Item) -> None:
    """Put the test's peak and limit in ``user_properties`` (read by ``_Summary``)."""
    item.user_properties.append((PEAK_PROPERTY, budget.peak))
    item.user_properties.append((LIMIT_PROPERTY, budget.limit if plan.enforced else None))
    if budget.tripped:
        item.user_properties.append((TRIPPED_PROPERTY, budget.refused_size))


def _explain_failure(exc: BaseException, budget: Budget, plan: _Plan, item: pytest.Item) -> None:
    """Turn *this* budget's ``BudgetExceeded`` into a clean test failure.

    A ``BudgetExceeded`` from a budget the test opened itself (the fixture) is the test's
    own exception and propagates unchanged, as does any other exception; when the test's
    budget tripped before such an exception, a report section says so.
    """
    __tracebackhide__ = True
    from nea.meter import BudgetExceeded

    if isinstance(exc, BudgetExceeded) and exc.statistics == budget.statistics():
        # Failed(pytrace=False): the meter's message already names the refused line, and
        # the traceback would run through the wrapper and the meter's exit path.
        text = f"nea: the test exceeded its memory budget (set by {plan.source})\n{exc}"
        raise pytest.fail.Exception(text, pytrace=False) from None
    if budget.tripped:
        stats = budget.statistics()
        where = stats.refused_at or "an unknown line"
        item.add_report_section(
            "call",
            "nea memory budget",
            f"the test's memory budget of {format_size(stats.limit)} (set by {plan.source}) "
            f"tripped before this failure: first refusal at {where}",
        )


class _Summary:
    """The ``--memory-summary`` report: collects every test's peak, prints the top ones.

    Registered as a plugin only when the option is given. It reads the peaks from
    ``report.user_properties``, so it also works on the pytest-xdist controller.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.measured: list[_Measured] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        props = dict(report.user_properties)
        peak = props.get(PEAK_PROPERTY)
        if isinstance(peak, int):
            limit = props.get(LIMIT_PROPERTY)
            limit = limit if isinstance(limit, int) else None
            refused = props.get(TRIPPED_PROPERTY)
            refused = refused if isinstance(refused, int) else None
            self.measured.append(_Measured(report.nodeid, peak, limit, refused))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        top = sorted(self.measured, key=lambda m: (-m.peak, m.nodeid))[: self.count]
        terminalreporter.write_sep("=", f"nea memory summary: top {self.count} tests by peak")
        if not top:
            terminalreporter.write_line("no test was measured")
            return
        terminalreporter.write_line(f"{'peak':>10}  {'budget':>10}  test")
        for m in top:
            budget = format_size(m.limit) if m.limit is not None else "none"
            line = f"{format_size(m.peak):>10}  {budget:>10}  {m.nodeid}"
            terminalreporter.write_line(line + _trip_note(m.refused))


def _trip_note(refused: int | None) -> str:
    """The summary's mark for a tripped test, with the size of the allocation that crossed
    its limit: the peak is only what the budget granted (an allocation past the hard
    ceiling was refused), not what the test asked for."""
    if refused is None:
        return ""
    if refused == 0:
        return "  TRIPPED (limit passed, measured on exit)"
    return f"  TRIPPED (a {format_size(refused)} allocation crossed it)"


@pytest.fixture
def memory_budget() -> Callable[[int | str], Budget]:
    """A factory of nea budgets: ``with memory_budget("8MiB") as b: ...`` (or ``async with``).

    After the block, ``b.peak``, ``b.live``, ``b.tripped`` and ``b.statistics()`` hold the
    block's final accounting. Leaving a tripped block raises ``nea.BudgetExceeded``.
    """
    from nea.meter import budget

    return budget
