"""Option text → Config, in-process: every option, its default, and its error message."""

from __future__ import annotations

import pytest

from nea import Config, ConfigError
from nea.cli import build_parser, config_from_args


def parse(*argv: str, environ: dict[str, str] | None = None) -> Config:
    args = build_parser().parse_args(list(argv))
    return config_from_args(args, environ or {})


def test_defaults_match_config_defaults() -> None:
    assert parse("main:app") == Config(app="main:app")


def test_every_option_reaches_config() -> None:
    config = parse(
        "main:app",
        "--host", "0.0.0.0",
        "--port", "9000",
        "--uds", "/tmp/nea.sock",
        "--fd", "3",
        "--backlog", "10",
        "--workers", "3",
        "--loop", "asyncio",
        "--http", "h11",
        "--lifespan", "off",
        "--timeout-keep-alive", "2.5",
        "--timeout-request-headers", "7",
        "--timeout-request-body", "20",
        "--buffer-request-body", "1KiB",
        "--timeout-graceful-shutdown", "30",
        "--limit-max-requests", "1000",
        "--limit-request-headers", "8KiB",
        "--limit-request-body", "1MB",
        "--root-path", "/api",
        "--no-proxy-headers",
        "--forwarded-allow-ips", "10.0.0.1, 10.0.0.2",
        "--header", "x-one: 1",
        "--header", "X-Two:2",
        "--no-server-header",
        "--no-date-header",
        "--log-level", "trace",
        "--no-access-log",
        "--app-dir", "src",
        "--factory",
        "--ssl-keyfile", "key.pem",
        "--ssl-certfile", "cert.pem",
    )  # fmt: skip
    assert config == Config(
        app="main:app",
        host="0.0.0.0",
        port=9000,
        uds="/tmp/nea.sock",
        fd=3,
        backlog=10,
        workers=3,
        loop="asyncio",
        http="h11",
        lifespan="off",
        timeout_keep_alive=2.5,
        timeout_request_headers=7.0,
        timeout_request_body=20.0,
        buffer_request_body=1024,
        timeout_graceful_shutdown=30.0,
        limit_max_requests=1000,
        limit_request_headers=8 * 1024,
        limit_request_body=1_000_000,
        root_path="/api",
        proxy_headers=False,
        forwarded_allow_ips=("10.0.0.1", "10.0.0.2"),
        headers=(("x-one", "1"), ("X-Two", "2")),
        server_header=False,
        date_header=False,
        log_level="trace",
        access_log=False,
        app_dir="src",
        factory=True,
        ssl_keyfile="key.pem",
        ssl_certfile="cert.pem",
    )


def test_forwarded_allow_ips_defaults_to_the_environment_variable() -> None:
    assert parse("m:a", environ={"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)
    assert parse("m:a").forwarded_allow_ips == ("127.0.0.1",)
    # The option wins over the environment, as in uvicorn.
    config = parse("m:a", "--forwarded-allow-ips", "1.2.3.4", environ={"FORWARDED_ALLOW_IPS": "*"})
    assert config.forwarded_allow_ips == ("1.2.3.4",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--port", "70000"],
            "--port: expected a whole number between 0 and 65535, got 70000",
        ),
        (["--port", "http"], "--port: expected a whole number, got 'http'"),
        (["--workers", "0"], "--workers: expected a whole number at least 1, got 0"),
        (["--backlog", "1.5"], "--backlog: expected a whole number, got '1.5'"),
        (["--fd", "x"], "--fd: expected a whole number, got 'x'"),
        (
            ["--timeout-keep-alive", "soon"],
            "--timeout-keep-alive: expected a number of seconds, got 'soon'",
        ),
        (
            ["--timeout-graceful-shutdown", "-1"],
            "--timeout-graceful-shutdown: expected a non-negative number of seconds, got -1.0",
        ),
        (
            ["--timeout-request-body", "-2"],
            "--timeout-request-body: expected a non-negative number of seconds, got -2.0",
        ),
        (["--buffer-request-body", "big"], "--buffer-request-body: "),
        (["--limit-max-requests", "many"], "--limit-max-requests: expected a whole number"),
        (["--limit-request-headers", "lots"], "--limit-request-headers: "),
        (["--limit-request-body", "10 parsecs"], "--limit-request-body: "),
        (["--loop", "trio"], "--loop: expected one of auto, asyncio, uvloop, got 'trio'"),
        (["--http", "h2"], "--http: expected one of auto, h11, httptools, got 'h2'"),
        (["--lifespan", "maybe"], "--lifespan: expected one of auto, on, off, got 'maybe'"),
        (["--log-level", "loud"], "--log-level: expected one of critical, error, warning"),
        (["--header", "no-colon"], "--header: expected 'name:value', got 'no-colon'"),
        (["--root-path", "api/"], "--root-path: expected a path starting with '/'"),
        (["--ssl-keyfile", "k.pem"], "--ssl-keyfile and --ssl-certfile must be given together"),
    ],
)
def test_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse("main:app", *argv)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_app_without_colon_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^APP: expected 'module:attribute'"):
        parse("main")
