"""``nea.run()``: serve an app from Python, with signals, the chosen loop and optional workers.

Owns: building the ``Config`` from keyword options, logging set-up when the application has
not configured logging itself, SIGINT/SIGTERM handling (first signal → graceful shutdown,
second → force exit) and the choice between one process and the ``--workers`` supervisor.
It raises exceptions and never calls ``sys.exit`` (only ``nea.cli.main`` does).
Must not import the CLI. The server is imported lazily so ``import nea`` stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nea._errors import ConfigError
from nea._logging import ERROR_LOGGER, TRACE, configure_logging_from, logging_is_configured
from nea._loops import run_on_loop
from nea._sockets import bind_socket, create_ssl_context
from nea._types import ASGIApp
from nea.config import Config

if TYPE_CHECKING:
    from nea.metrics import ServerMetrics
    from nea.server import Server

logger = logging.getLogger(ERROR_LOGGER)

SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def run(app: str | ASGIApp, **options: Any) -> None:
    """Serve ``app`` (an ASGI callable or a ``"module:attribute"`` string) until stopped.

    ``options`` are ``nea.Config`` fields (``port=8080``, ``workers=2``, ...). Logging is set up
    as the CLI does unless the application already configured logging (handlers on the root
    or ``nea`` logger), in which case nea's records go through the application's handlers.

    Returns after a graceful shutdown (SIGINT/SIGTERM). Raises ``ConfigError`` for bad
    options, ``AppImportError``, ``BindError``, or ``LifespanStartupFailed``.
    """
    config = build_config(app, options)
    logging.addLevelName(TRACE, "TRACE")  # named even when the application set up logging
    if not logging_is_configured() or config.log_config is not None:
        configure_logging_from(config)
    run_config(config)


def build_config(app: str | ASGIApp, options: dict[str, Any]) -> Config:
    """``Config(app=app, **options)``, with unknown option names reported as ``ConfigError``."""
    known = {field.name for field in dataclasses.fields(Config)} - {"app"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; expected one of: {', '.join(sorted(known))}"
        )
    return Config(app=app, **options)


def run_config(config: Config) -> None:
    """Serve ``config`` in this process, or under the supervisor when ``workers > 1`` or
    ``reload`` (which restarts one worker process when files change)."""
    load_env_file(config)
    # Unreadable TLS files are a command-line mistake: report them before anything starts.
    create_ssl_context(config)
    if config.workers > 1 or config.reload:
        if not isinstance(config.app, str):
            raise ConfigError(
                "--workers: more than one worker needs the app as an import string "
                "('module:attribute') so each worker process can import it"
            )
        from nea._supervisor import Supervisor

        Supervisor(config).run()
        return
    # Bind before the app is imported and its lifespan runs, so that "address in use" fails
    # fast and alone instead of after the application started (and stopped) for nothing.
    sock = bind_socket(config)
    try:
        with metrics_listener(config):
            run_on_loop(serve_until_signalled(config, [sock]), loop=config.loop)
    finally:
        sock.close()
        remove_unix_socket(config)


@contextlib.contextmanager
def metrics_listener(config: Config) -> Iterator[None]:
    """With ``--metrics``: the multiprocess directory and the ``/metrics`` listener, for as
    long as the block runs (the supervisor's, or the single server process's)."""
    if config.metrics is None:
        yield
        return
    from nea.metrics import MetricsDirectory, MetricsListener

    directory = MetricsDirectory()
    try:
        listener = MetricsListener(config)
        try:
            yield
        finally:
            listener.close()
    finally:
        directory.close()


def load_env_file(config: Config) -> None:
    """``--env-file``: set the file's variables (python-dotenv) in this process's environment,
    before the app is imported; worker processes inherit them. Variables already set win,
    as with uvicorn. Raises ``ConfigError`` when the file or python-dotenv is missing."""
    if config.env_file is None:
        return
    if not os.path.isfile(config.env_file):
        raise ConfigError(f"--env-file: expected a readable file, got {config.env_file!r}")
    try:
        from dotenv import load_dotenv
    except ImportError:
        raise ConfigError(
            "--env-file: needs python-dotenv; install nea[standard] (pip install 'nea[standard]')"
        ) from None
    logger.info("Loading environment from '%s'", config.env_file)
    load_dotenv(dotenv_path=config.env_file)


def with_jitter(config: Config) -> Config:
    """``limit_max_requests`` plus a random 0..``limit_max_requests_jitter`` for this process,
    so workers started together do not all restart together."""
    if config.limit_max_requests is None or config.limit_max_requests_jitter == 0:
        return config
    extra = random.randint(0, config.limit_max_requests_jitter)
    return config.replace(limit_max_requests=config.limit_max_requests + extra)


def remove_unix_socket(config: Config) -> None:
    """Remove the ``--uds`` socket file nea created (never a file nea did not bind)."""
    if config.uds is None or config.fd is not None:
        return
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.stat(config.uds).st_mode):
            os.unlink(config.uds)


async def serve_until_signalled(
    config: Config,
    sockets: Sequence[socket.socket] | None = None,
    *,
    signals: Sequence[signal.Signals] = SHUTDOWN_SIGNALS,
    on_started: Callable[[], None] | None = None,
    stop_when_readable: int | None = None,
) -> None:
    """Run ``nea.Server(config)`` until a signal in ``signals`` asks it to stop.

    The first signal starts a graceful shutdown; a second one forces the exit (open
    connections are closed without waiting). Signal handlers are installed only in the main
    thread (Python allows no others); elsewhere the caller stops the server. ``on_started`` is
    called once the server accepts connections. The server takes ``sockets`` over and
    closes them as it stops listening (the caller's later ``close()`` is a no-op), so that
    a shutdown refuses new connections at once. When the file descriptor
    ``stop_when_readable`` becomes readable (a worker's pipe from its supervisor reaching EOF),
    the server shuts down gracefully. Exceptions from the server propagate.
    """
    from nea.server import Server

    config = with_jitter(config)
    metrics = None
    if config.metrics is not None:
        from nea._importer import import_app
        from nea.metrics import ServerMetrics

        metrics = ServerMetrics(None if config.meter == "off" else config.budget)
        # The app is imported here (not by the server) to wrap it with the peak histogram.
        config = config.replace(app=metrics.wrap(import_app(config)), factory=False)
    server = Server(config)
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if len(received) == 1:
            logger.info("%s received: shutting down gracefully", signum.name)
            server.shutdown()
        else:
            logger.warning("%s received again: forcing exit", signum.name)
            server.force_exit()

    def on_readable() -> None:
        assert stop_when_readable is not None  # only registered with a descriptor
        loop.remove_reader(stop_when_readable)
        logger.warning("the supervisor process is gone: shutting down gracefully")
        server.shutdown()

    if threading.current_thread() is not threading.main_thread():
        signals = ()
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    if stop_when_readable is not None:
        loop.add_reader(stop_when_readable, on_readable)
    sampling = None if metrics is None else asyncio.ensure_future(_sample(server, metrics))
    try:
        await _serve(server, list(sockets) if sockets is not None else None, on_started)
        logger.info("Finished server process [%d]", os.getpid())
    finally:
        if sampling is not None:
            sampling.cancel()
        for signum in signals:
            loop.remove_signal_handler(signum)
        if stop_when_readable is not None:
            loop.remove_reader(stop_when_readable)


async def _sample(server: Server, metrics: ServerMetrics) -> None:
    """Copy the server's admission counters into its metrics, every ``SAMPLE_SECONDS``
    (they change without notification; see ``nea.metrics``)."""
    from nea.metrics import SAMPLE_SECONDS

    await server.wait_started()
    if server.memory_plan is not None:
        metrics.plan(server.memory_plan)
    while True:
        metrics.sample(server.statistics())
        await asyncio.sleep(SAMPLE_SECONDS)


async def _serve(
    server: Server, sockets: list[socket.socket] | None, on_started: Callable[[], None] | None
) -> None:
    # The server takes the sockets over (closes them as it stops listening), so that a
    # shutdown refuses new connections at once.
    if on_started is None:
        await server.serve(sockets, close_sockets=True)
        return
    serving = asyncio.ensure_future(server.serve(sockets, close_sockets=True))
    started = asyncio.ensure_future(server.wait_started())
    # If serve() fails, wait_started() fails too; serve()'s exception is the one to raise.
    started.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if started.done() and not started.cancelled() and started.exception() is None:
            on_started()
        await serving
    finally:
        started.cancel()
        serving.cancel()
