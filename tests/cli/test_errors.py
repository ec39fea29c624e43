"""CLI mistakes end with one line ``nea: error: ...`` and exit code 1, never a traceback.

Each case runs ``python -m nea`` for real: the exit code and stderr are what users see.
"""

from __future__ import annotations

import socket

import pytest

from .helpers import APPS_DIR, run_nea


def assert_one_error_line(result: object, expected: str) -> None:
    assert result.returncode == 1, result  # type: ignore[attr-defined]
    lines = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert lines == [f"nea: error: {expected}"] or (
        len(lines) == 1 and lines[0].startswith(f"nea: error: {expected}")
    ), result.stderr  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["m:app", "--port", "70000"], "--port: expected a whole number between 0 and 65535"),
        (["m:app", "--limit-request-body", "lots"], "--limit-request-body: "),
        (["m:app", "--loop", "trio"], "--loop: expected one of auto, asyncio, uvloop"),
        (["m:app", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: APP"),
        (["justamodule"], "APP: expected 'module:attribute'"),
        (["m:app", "--header", "broken"], "--header: expected 'name:value'"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], expected: str) -> None:
    assert_one_error_line(run_nea(*argv), expected)


def test_missing_module_is_one_line() -> None:
    result = run_nea("no_such_module_for_nea:app")
    assert_one_error_line(result, "")
    assert "no_such_module_for_nea" in result.stderr


def test_missing_attribute_is_one_line() -> None:
    result = run_nea("nea_test_apps:no_such_app", "--app-dir", str(APPS_DIR))
    assert_one_error_line(result, "")
    assert "no_such_app" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_address_in_use_is_one_line(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_nea(
            "nea_test_apps:pid_app",
            "--app-dir", str(APPS_DIR),
            "--port", str(port),
            "--workers", workers,
        )  # fmt: skip
    assert_one_error_line(result, f"cannot listen on 127.0.0.1:{port}: address already in use")


def test_unreadable_tls_files_are_one_line() -> None:
    result = run_nea(
        "nea_test_apps:pid_app",
        "--app-dir", str(APPS_DIR),
        "--ssl-certfile", "/nonexistent/cert.pem",
        "--ssl-keyfile", "/nonexistent/key.pem",
    )  # fmt: skip
    assert_one_error_line(result, "--ssl-certfile/--ssl-keyfile: cannot load '/nonexistent/")


def test_version_and_help_exit_zero() -> None:
    version = run_nea("--version")
    assert (version.returncode, version.stdout.strip()) == (0, "nea 0.1.0")
    help_text = run_nea("--help")
    assert help_text.returncode == 0
    for option in ("--limit-request-body", "--forwarded-allow-ips", "--no-server-header"):
        assert option in help_text.stdout
