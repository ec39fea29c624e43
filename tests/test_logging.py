import logging
from collections.abc import Iterator

import pytest

from nea._logging import TRACE, LevelPrefixFormatter, configure_logging


@pytest.fixture(autouse=True)
def restore_nea_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("nea", "nea.error", "nea.access")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def _format(level: int, message: str) -> str:
    logging.addLevelName(TRACE, "TRACE")
    record = logging.LogRecord("nea.error", level, __file__, 1, message, None, None)
    return LevelPrefixFormatter("%(message)s").format(record)


def test_format_matches_uvicorn() -> None:
    assert _format(logging.INFO, "hello") == "INFO:     hello"
    assert _format(logging.WARNING, "hello") == "WARNING:  hello"
    assert _format(logging.CRITICAL, "hello") == "CRITICAL: hello"
    assert _format(TRACE, "hello") == "TRACE:    hello"


def test_levels_and_streams(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", access_log=True)
    logging.getLogger("nea.error").info("hidden")
    logging.getLogger("nea.error").warning("shown")
    logging.getLogger("nea.access").warning("access line")
    captured = capsys.readouterr()
    assert captured.err == "WARNING:  shown\n"
    assert captured.out == "WARNING:  access line\n"


def test_trace_level_and_no_access_log(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("trace", access_log=False)
    logging.getLogger("nea.error").log(TRACE, "chatter")
    access = logging.getLogger("nea.access")
    access.info('127.0.0.1:1 - "GET / HTTP/1.1" 200')
    assert not access.isEnabledFor(logging.CRITICAL)
    captured = capsys.readouterr()
    assert (captured.err, captured.out) == ("TRACE:    chatter\n", "")


def test_configuring_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    configure_logging("info")
    logging.getLogger("nea.error").info("once")
    assert capsys.readouterr().err == "INFO:     once\n"
