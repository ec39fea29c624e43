import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from nea import ConfigError
from nea._logging import TRACE, LevelPrefixFormatter, configure_logging


@pytest.fixture(autouse=True)
def restore_nea_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("", "nea", "nea.error", "nea.access")]
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


def test_colors_and_pid() -> None:
    logging.addLevelName(TRACE, "TRACE")
    record = logging.LogRecord("nea.error", logging.WARNING, __file__, 1, "hot", None, None)
    colored = LevelPrefixFormatter(use_colors=True, show_pid=True).format(record)
    assert colored == f"\x1b[33mWARNING:\x1b[0m  [{record.process}] hot"


YAML_CONFIG = """
version: 1
disable_existing_loggers: false
formatters: {plain: {format: "YAML %(levelname)s %(message)s"}}
handlers: {out: {class: logging.StreamHandler, formatter: plain, stream: ext://sys.stderr}}
loggers: {nea: {handlers: [out], level: INFO, propagate: false}}
"""

INI_CONFIG = """
[loggers]
keys=root,nea
[handlers]
keys=out
[formatters]
keys=plain
[logger_root]
handlers=
[logger_nea]
handlers=out
qualname=nea
propagate=0
level=INFO
[handler_out]
class=StreamHandler
formatter=plain
args=(sys.stderr,)
[formatter_plain]
format=INI %(levelname)s %(message)s
"""


@pytest.mark.parametrize(
    ("name", "text", "prefix"),
    [("log.yaml", YAML_CONFIG, "YAML"), ("log.ini", INI_CONFIG, "INI")],
)
def test_log_config_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, prefix: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    configure_logging("info", log_config=str(path))
    logging.getLogger("nea.error").info("configured")
    assert capsys.readouterr().err.endswith(f"{prefix} INFO configured\n")


def test_unreadable_log_config_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"^--log-config: cannot apply '.*log\.json' \(expected"):
        configure_logging("info", log_config=str(path))
