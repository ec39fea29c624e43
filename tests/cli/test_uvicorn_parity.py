"""Every option of the installed uvicorn's ``--help`` is accepted by nea or rejected with a
reason; ``NEA_<OPTION>`` variables; the options uvicorn users bring along."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nea import Config, ConfigError
from nea.cli import UNSUPPORTED, _ParserExit, all_options, build_parser, config_from_args
from nea.config import DEFAULT_RELOAD_EXCLUDES, DEFAULT_SLOTS


def parse(*argv: str, environ: dict[str, str] | None = None) -> Config:
    args = build_parser().parse_args(list(argv))
    return config_from_args(args, environ or {})


def parser_error(*argv: str) -> str:
    with pytest.raises(_ParserExit) as caught:
        build_parser().parse_args(list(argv))
    assert caught.value.status == 1
    return caught.value.message or ""


def uvicorn_options() -> list[str]:
    pytest.importorskip("uvicorn")
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        # Wide enough that click wraps no option name across lines.
        env={**os.environ, "COLUMNS": "400"},
    )
    # Options start their line; a switch's second form follows a slash.
    pairs = re.findall(r"^\s+(--[\w-]+)(?:[^/\n]*/\s*(--[\w-]+))?", result.stdout, re.MULTILINE)
    options = sorted({flag for pair in pairs for flag in pair if flag} - {"--help"})
    assert len(options) > 30, result.stdout  # the help text was read
    return options


def test_every_uvicorn_option_is_accepted_or_rejected_with_a_reason() -> None:
    accepted = {option.flag for option in all_options()}
    accepted |= {"--no-" + o.flag[2:] for o in all_options() if o.kind == "switch"}
    accepted |= {"--version"}
    rejected = {item.flag for item in UNSUPPORTED}
    unknown = [flag for flag in uvicorn_options() if flag not in accepted | rejected]
    assert unknown == []


@pytest.mark.parametrize("item", UNSUPPORTED, ids=lambda item: item.flag)
def test_rejected_options_say_why_in_one_line(item: object) -> None:
    flag = item.flag  # type: ignore[attr-defined]
    argv = ["main:app", flag] + (["1"] if item.takes_value else [])  # type: ignore[attr-defined]
    message = parser_error(*argv)
    assert message.startswith(f"nea: error: {flag}: not supported by nea: ")
    assert message.count("\n") == 1


def test_switches_have_both_forms() -> None:
    config = parse("m:a", "--no-server-header", "--no-date-header", "--no-use-colors")
    assert (config.server_header, config.date_header, config.use_colors) == (False, False, False)
    config = parse("m:a", "--server-header", "--date-header", "--use-colors")
    assert (config.server_header, config.date_header, config.use_colors) == (True, True, True)


def test_uvicorn_options_reach_config() -> None:
    config = parse(
        "m:a",
        "--interface", "asgi3",
        "--env-file", ".env",
        "--log-config", "log.json",
        "--ssl-keyfile", "k.pem", "--ssl-certfile", "c.pem",
        "--ssl-keyfile-password", "secret",
        "--ssl-version", "2", "--ssl-cert-reqs", "2",
        "--ssl-ca-certs", "ca.pem", "--ssl-ciphers", "ECDHE",
        "--limit-max-requests", "100", "--limit-max-requests-jitter", "10",
        "--h11-max-incomplete-event-size", "16384",
        "--metrics", "127.0.0.1:9100",
        "--reload", "--reload-dir", "src", "--reload-delay", "0.5",
    )  # fmt: skip
    assert config.interface == "asgi3"
    assert (config.env_file, config.log_config) == (".env", "log.json")
    assert (config.ssl_keyfile_password, config.ssl_version, config.ssl_cert_reqs) == (
        "secret",
        2,
        2,
    )
    assert (config.ssl_ca_certs, config.ssl_ciphers) == ("ca.pem", "ECDHE")
    assert (config.limit_max_requests, config.limit_max_requests_jitter) == (100, 10)
    assert config.limit_request_headers == 16384
    assert config.metrics == "127.0.0.1:9100"
    assert (config.reload, config.reload_dirs, config.reload_delay) == (True, ("src",), 0.5)


def test_limit_concurrency_is_slots_without_a_queue() -> None:
    config = parse("m:a", "--limit-concurrency", "10")
    assert (config.slots, config.queue_size) == (10, 0)
    with pytest.raises(ConfigError, match=r"^--limit-concurrency: give it or --slots/--queue"):
        parse("m:a", "--limit-concurrency", "10", "--slots", "4")
    assert parse("m:a").slots == DEFAULT_SLOTS


def test_reload_patterns_follow_uvicorn() -> None:
    config = parse("m:a", "--reload-include", "*.html", "--reload-exclude", "*.py")
    assert config.reload_includes == ("*.html",)
    assert config.reload_excludes == (*DEFAULT_RELOAD_EXCLUDES, "*.py")
    config = parse("m:a", "--reload-include", ".env")
    assert config.reload_includes == ("*.py", ".env")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reload", "--workers", "2"], "--reload and --workers: give one"),
        (["--metrics", "9100"], "--metrics: expected HOST:PORT (e.g. 127.0.0.1:9100), got '9100'"),
        (["--interface", "wsgi"], "--interface: expected one of auto, asgi3, got 'wsgi'"),
        (
            ["--h11-max-incomplete-event-size", "1", "--limit-request-headers", "2"],
            "--h11-max-incomplete-event-size and --limit-request-headers: give one",
        ),
        (["--reload-delay", "x"], "--reload-delay: expected a number of seconds, got 'x'"),
    ],
)
def test_bad_new_options_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse("main:app", *argv)
    assert str(caught.value).startswith(message)


def test_environment_variables_set_options() -> None:
    environ = {
        "NEA_PORT": "9000",
        "NEA_BUDGET": "16MiB",
        "NEA_ACCESS_LOG": "false",
        "NEA_PREFAULT": "yes",
        "NEA_HEADER": "x-one: 1 2\nx-two: 3",
        "NEA_RELOAD_DIR": "src lib",
        "NEA_APP": "env:app",
    }
    config = config_from_args(build_parser().parse_args([]), environ)
    assert (config.app, config.port, config.budget) == ("env:app", 9000, 16 * 1024 * 1024)
    assert (config.access_log, config.prefault) == (False, True)
    assert config.headers == (("x-one", "1 2"), ("x-two", "3"))
    assert config.reload_dirs == ("src", "lib")


def test_command_line_wins_over_the_environment() -> None:
    config = parse("m:a", "--port", "7000", "--access-log", environ={"NEA_PORT": "9000"})
    assert config.port == 7000
    config = parse("m:a", "--access-log", environ={"NEA_ACCESS_LOG": "0"})
    assert config.access_log is True


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("m:a", environ={"NEA_PORT": "http"})
    assert str(caught.value) == "--port (from NEA_PORT): expected a whole number, got 'http'"
    with pytest.raises(ConfigError, match=r"^--reload \(from NEA_RELOAD\): expected true or false"):
        parse("m:a", environ={"NEA_RELOAD": "sometimes"})


def test_meter_and_region_variables_keep_their_meaning() -> None:
    # NEA_METER and NEA_REGION also select the meter of budgets opened outside the server;
    # the CLI reads them as --meter and --region with the same values.
    assert parse("m:a", environ={"NEA_METER": "auto"}).meter == "native"
    assert parse("m:a", environ={"NEA_METER": "tracemalloc"}).meter == "tracemalloc"
    assert parse("m:a", environ={"NEA_REGION": "off"}).region == "off"


def test_web_concurrency_sets_workers_as_in_uvicorn() -> None:
    assert parse("m:a", environ={"WEB_CONCURRENCY": "3"}).workers == 3
    assert parse("m:a", "--workers", "2", environ={"WEB_CONCURRENCY": "3"}).workers == 2


def test_help_shows_config_defaults() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "memory budget per request (32MiB)" in text
    assert "requests run at once (64)" in text
    assert "[$NEA_BUDGET]" in text


def test_docs_list_every_option() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    missing = [o.flag for o in all_options() if f"`{o.flag}" not in doc]
    missing += [u.flag for u in UNSUPPORTED if f"`{u.flag}" not in doc]
    assert missing == []
