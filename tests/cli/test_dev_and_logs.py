"""Real ``nea`` processes: --reload, --env-file, NEA_* variables, --log-config, uvicorn's
startup lines, the pid under --workers and restart throttling of crash loops."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from .helpers import APPS_DIR, NeaProcess, get
from .test_workers import paused

StartNea = Callable[..., NeaProcess]
APP_DIR = ("--app-dir", str(APPS_DIR))

RELOAD_APP = """
BODY = {body!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": BODY}})
"""


def test_reload_restarts_on_change_and_survives_a_broken_file(
    start_nea: StartNea, tmp_path: Path
) -> None:
    module = tmp_path / "reload_app.py"
    module.write_text(RELOAD_APP.format(body=b"one"))
    nea = start_nea(
        "reload_app:app", "--app-dir", str(tmp_path), "--reload", "--reload-dir", str(tmp_path),
        "--port", "0", "--reload-delay", "0.1",
    )  # fmt: skip
    nea.wait_for_line(r"Started reloader process \[\d+\] using WatchFiles")
    port = int(nea.wait_for_line(r"starting 1 workers on http://127\.0\.0\.1:(\d+)").group(1))
    nea.wait_for_line(r"nea running on")
    assert get(("127.0.0.1", port)) == (200, b"one")

    module.write_text(RELOAD_APP.format(body=b"two"))
    nea.wait_for_line(r"WatchFiles detected changes in '.*reload_app\.py'\. Reloading\.\.\.")
    nea.wait_for_line(r"nea running on")
    assert get(("127.0.0.1", port)) == (200, b"two")

    module.write_text("this is not python\n")
    nea.wait_for_line(r"the server did not start \(.*\); waiting for a file change")
    module.write_text(RELOAD_APP.format(body=b"three"))
    nea.wait_for_line(r"nea running on")
    assert get(("127.0.0.1", port)) == (200, b"three")

    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0
    nea.wait_for_line(r"Stopping reloader process")


def test_env_file_and_nea_variables(start_nea: StartNea, tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("NEA_TEST_GREETING=hello from the env file\n")
    nea = start_nea(
        "nea_test_apps:env_app",
        *APP_DIR,
        env={"NEA_PORT": "0", "NEA_ENV_FILE": str(env_file), "NEA_ACCESS_LOG": "false"},
    )
    nea.wait_for_line(r"Loading environment from '.*app\.env'")
    address = nea.wait_running()
    assert get(address, "/NEA_TEST_GREETING") == (200, b"hello from the env file")
    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0
    assert not any('"GET /' in line for _, line in nea.seen)  # NEA_ACCESS_LOG=false


def test_uvicorn_startup_and_shutdown_lines(start_nea: StartNea) -> None:
    nea = start_nea("nea_test_apps:pid_app", *APP_DIR, "--port", "0")
    pid = nea.process.pid
    for line in (
        rf"^INFO:     Started server process \[{pid}\]$",
        r"^INFO:     Waiting for application startup\.$",
        r"^INFO:     Application startup complete\.$",
    ):
        nea.wait_for_line(line)
    address = nea.wait_running()
    get(address)
    nea.wait_for_line(r'^INFO:     127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 200 OK \d+\.\dms')
    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0
    nea.wait_for_line(r"^INFO:     Application shutdown complete\.$")
    nea.wait_for_line(rf"^INFO:     Finished server process \[{pid}\]$")


def test_log_config_json_replaces_the_format(start_nea: StartNea, tmp_path: Path) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "CUSTOM %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "err": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        },
        "loggers": {"nea": {"handlers": ["err"], "level": "INFO", "propagate": False}},
    }  # fmt: skip
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    nea = start_nea("nea_test_apps:pid_app", *APP_DIR, "--port", "0", "--log-config", str(path))
    nea.wait_for_line(r"^CUSTOM INFO nea\.error Started server process")
    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0


def test_every_line_names_its_process_and_crash_loops_are_throttled(start_nea: StartNea) -> None:
    nea = start_nea("nea_test_apps:pid_app", *APP_DIR, "--port", "0", "--workers", "2")
    parent = nea.process.pid
    nea.wait_for_line(rf"^INFO:     \[{parent}\] Started parent process \[{parent}\]$")
    port = int(nea.wait_for_line(r"starting 2 workers on http://127\.0\.0\.1:(\d+)").group(1))
    workers = [int(nea.wait_for_line(r"started worker pid (\d+)").group(1)) for _ in range(2)]
    for _ in workers:
        match = nea.wait_for_line(r"^INFO:     \[(\d+)\] nea running on")
        assert int(match.group(1)) in workers

    # Killed right after it started: the replacement waits 0.5 s, the next one 1 s.
    with paused(workers[1]):  # served by workers[0]: it has told the supervisor it started
        assert get(("127.0.0.1", port)) == (200, str(workers[0]).encode())
    os.kill(workers[0], signal.SIGKILL)
    nea.wait_for_line(r"after it was started \(1 in a row\); next start in 0\.5s")
    replacement = int(nea.wait_for_line(r"started worker pid (\d+)").group(1))
    nea.wait_for_line(rf"^INFO:     \[{replacement}\] nea running on")
    with paused(workers[1]):  # the replacement serves: it has told the supervisor it started
        assert get(("127.0.0.1", port)) == (200, str(replacement).encode())
    os.kill(replacement, signal.SIGKILL)
    nea.wait_for_line(r"after it was started \(2 in a row\); next start in 1\.0s")
    nea.wait_for_line(r"started worker pid (\d+)")
    nea.wait_for_line(r"nea running on")

    nea.send_signal(signal.SIGTERM)
    assert nea.wait_exit() == 0
    prefixed = re.compile(r"^(INFO|WARNING|ERROR):\s+\[\d+\] ")
    stderr = nea.stderr_lines()
    assert stderr and all(prefixed.match(line) for line in stderr), stderr
