"""``--workers N``: one parent process binds, N worker processes serve the shared socket.

Owns: spawning workers (multiprocessing "spawn" context, the listening socket passed to each),
restarting a worker that exits while the server is meant to be running, and stopping them all
on SIGINT/SIGTERM. The parent never runs an event loop or imports the app; it blocks in
``multiprocessing.connection.wait`` on worker sentinels, their "started" pipes and a
self-pipe that the signal handler writes to, so it wakes on events and never polls.

Signals: workers ignore SIGINT (Ctrl-C reaches the whole process group; the parent decides)
and treat SIGTERM like a single-process server treats its signals: the first drains
gracefully, the second forces the exit. The parent forwards every SIGINT/SIGTERM it gets as
SIGTERM to each worker, so a second Ctrl-C forces the workers out too.

A worker that fails before it starts serving (app import error, lifespan startup failure,
bind error) stops the whole supervisor: its exception is sent to the parent through the
pipe and re-raised there, so ``nea --workers 2`` fails exactly like ``nea`` does.

Crash loops are throttled: a worker that dies within ``STABLE_AFTER_SECONDS`` of starting is
replaced after a delay that doubles with each such death (``RESTART_DELAY_*``); one that
lived longer is replaced at once and resets the delay.

``--reload`` runs one worker under the same supervisor, with a ``nea._reload.Watcher``: a
file change restarts the worker gracefully, and a worker that cannot start (a syntax error
being fixed) is reported and waits for the next change instead of stopping nea.
Must not import the server at module level (workers import it after spawning).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from nea._errors import NeaError
from nea._logging import ERROR_LOGGER, configure_logging_from
from nea._run import metrics_listener, remove_unix_socket
from nea._sockets import bind_socket, describe_address
from nea.config import Config

logger = logging.getLogger(ERROR_LOGGER)

# After the graceful-shutdown timeout, workers still get this long for lifespan shutdown and
# process exit before they are killed.
EXIT_GRACE_SECONDS = 5.0
# Restart throttling: a worker that dies sooner than this after it was spawned counts as a
# crash loop; the next spawn waits INITIAL, then twice as long each time, at most MAX
# (gunicorn and systemd throttle the same way, with a fixed delay).
STABLE_AFTER_SECONDS = 10.0
RESTART_DELAY_INITIAL_SECONDS = 0.5
RESTART_DELAY_MAX_SECONDS = 30.0


class WorkerStartupError(NeaError):
    """A worker process exited before it started serving, without saying why."""


@dataclass
class _Worker:
    process: BaseProcess
    status: Connection  # read end: "started" or the startup exception
    lifeline: Connection  # write end, never written: the worker sees EOF if the parent dies
    started: bool = False
    failure: BaseException | None = None
    spawned_at: float = field(default_factory=time.monotonic)
    replacing: bool = False  # stopped on purpose (--reload): start a new one at once


class Supervisor:
    """Runs ``config.workers`` worker processes on one socket bound here.

    ``run()`` blocks until every worker has stopped after SIGINT/SIGTERM, and raises the
    exception of a worker that could not start.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}  # keyed by the process sentinel
        self._stopping = False
        self._deadline: float | None = None  # when still-running workers get SIGKILL
        self._signals_received = 0
        self._failure: BaseException | None = None
        self._quick_deaths = 0  # workers in a row that died right after starting
        self._spawns_due: list[float] = []  # monotonic times of throttled restarts
        self._reload = config.reload
        self._reload_requested = threading.Event()
        self._listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        # Never block in the signal handler: a full buffer already means "wake up".
        self._wake_writer.setblocking(False)

    def run(self) -> None:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        watcher = None
        try:
            sock = bind_socket(self._config)
            try:
                if self._reload:
                    from nea._reload import Watcher

                    watcher = Watcher(self._config, self._on_change)
                    watcher.start()
                    logger.info(
                        "Will watch for changes in these directories: %s",
                        [str(d) for d in watcher.dirs],
                    )
                with metrics_listener(self._config):
                    self._supervise(sock)
            finally:
                if watcher is not None:
                    watcher.stop()
                sock.close()
                remove_unix_socket(self._config)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._wake_reader.close()
            self._wake_writer.close()
        if self._failure is not None:
            raise self._failure

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Runs between bytecodes in the main thread; the byte wakes wait() up.
        self._signals_received += 1
        self._wake()

    def _on_change(self, paths: list[str]) -> None:
        # Called from the watcher's thread.
        logger.warning(
            "WatchFiles detected changes in %s. Reloading...", ", ".join(map(repr, paths))
        )
        self._reload_requested.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _supervise(self, sock: socket.socket) -> None:
        if self._reload:
            logger.info("Started reloader process [%d] using WatchFiles", os.getpid())
        else:
            logger.info("Started parent process [%d]", os.getpid())
        self._listener = sock
        logger.info(
            "nea supervisor (pid %d) starting %d workers on %s",
            os.getpid(),
            self._config.workers,
            _url(sock, self._config),
        )
        for _ in range(self._config.workers):
            self._spawn(sock)
        handled_signals = 0
        while self._workers or self._spawns_due or (self._reload and not self._stopping):
            ready = wait([self._wake_reader, *self._waitables()], self._timeout())
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                self._kill_all()
            if self._wake_reader in ready:
                self._wake_reader.recv(64)
            while handled_signals < self._signals_received:
                handled_signals += 1
                self._request_stop()
            if self._reload_requested.is_set() and not self._stopping:
                self._reload_requested.clear()
                self._restart_all(sock)
            self._read_statuses(ready)
            for sentinel in [s for s in self._workers if s in ready]:
                self._reap(sentinel, sock)
            self._spawn_due(sock, time.monotonic())
        if self._reload:
            logger.info("Stopping reloader process [%d]", os.getpid())
        else:
            logger.info("Stopping parent process [%d]", os.getpid())
        logger.info("nea supervisor (pid %d) stopped", os.getpid())

    def _timeout(self) -> float | None:
        """Seconds until the next kill deadline or throttled restart (None: none pending)."""
        times = [*self._spawns_due]
        if self._deadline is not None:
            times.append(self._deadline)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _spawn_due(self, sock: socket.socket, now: float) -> None:
        if self._stopping:
            self._spawns_due.clear()
            return
        due = [t for t in self._spawns_due if t <= now]
        self._spawns_due = [t for t in self._spawns_due if t > now]
        for _ in due:
            self._spawn(sock)

    def _restart_all(self, sock: socket.socket) -> None:
        """--reload: stop every worker gracefully; ``_reap`` starts the new one."""
        if not self._workers:
            self._spawn(sock)  # the last one failed to start: try the changed code
            return
        for worker in self._workers.values():
            worker.replacing = True
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()

    def _waitables(self) -> list[Any]:
        items: list[Any] = list(self._workers)
        items.extend(w.status for w in self._workers.values() if not w.status.closed)
        return items

    def _spawn(self, sock: socket.socket) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        lifeline_reader, lifeline_writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(self._config, sock, writer, lifeline_reader),
            name="nea-worker",
            daemon=False,
        )
        process.start()
        # The child holds its own copies; closing ours makes EOF mean "the other side is gone".
        writer.close()
        lifeline_reader.close()
        self._workers[process.sentinel] = _Worker(process, reader, lifeline_writer)
        logger.info("started worker pid %d", process.pid)

    def _read_statuses(self, ready: list[Any]) -> None:
        for worker in self._workers.values():
            if worker.status in ready:
                self._read_status(worker)

    def _read_status(self, worker: _Worker) -> None:
        try:
            while not worker.status.closed and worker.status.poll():
                message = worker.status.recv()
                if message == "started":
                    worker.started = True
                elif isinstance(message, BaseException):
                    worker.failure = message
        except (EOFError, OSError):
            worker.status.close()

    def _reap(self, sentinel: int, sock: socket.socket) -> None:
        worker = self._workers.pop(sentinel)
        self._read_status(worker)
        worker.status.close()
        worker.lifeline.close()
        worker.process.join()
        code = worker.process.exitcode
        pid = worker.process.pid
        if self._config.metrics is not None and pid is not None:
            from nea.metrics import mark_process_dead

            mark_process_dead(pid)
        if self._stopping:
            logger.info("worker pid %d stopped (exit code %s)", pid, code)
            return
        if worker.replacing:
            self._spawn(sock)
            return
        if not worker.started:
            if self._reload:
                reason = worker.failure or f"exit code {code}"
                logger.error("the server did not start (%s); waiting for a file change", reason)
                return
            # Restarting would fail the same way (bad app, lifespan error): give up cleanly.
            self._failure = worker.failure or WorkerStartupError(
                f"worker pid {pid} exited with code {code} before it started serving"
            )
            self._request_stop()
            return
        if code == 0:
            logger.info("worker pid %d exited (exit code 0); starting a new one", pid)
        else:
            logger.error("worker pid %d died unexpectedly (exit code %s); restarting it", pid, code)
        self._schedule_restart(sock, time.monotonic() - worker.spawned_at)

    def _schedule_restart(self, sock: socket.socket, lived: float) -> None:
        """Spawn a replacement now, or later when workers keep dying right after starting."""
        if lived >= STABLE_AFTER_SECONDS:
            self._quick_deaths = 0
            self._spawn(sock)
            return
        delay = min(
            RESTART_DELAY_INITIAL_SECONDS * 2**self._quick_deaths, RESTART_DELAY_MAX_SECONDS
        )
        self._quick_deaths += 1
        logger.warning(
            "worker died %.1fs after it was started (%d in a row); next start in %.1fs",
            lived,
            self._quick_deaths,
            delay,
        )
        self._spawns_due.append(time.monotonic() + delay)

    def _request_stop(self) -> None:
        """First call: SIGTERM every worker (graceful). Later calls: SIGTERM again (force)."""
        if not self._stopping:
            self._stopping = True
            # Stop listening here at once; each worker closes its own copy as it stops, and
            # then the port refuses new connections (no worker is spawned after this).
            if self._listener is not None:
                self._listener.close()
            logger.info("stopping %d worker(s) gracefully", len(self._workers))
            drain = self._config.timeout_graceful_shutdown
            # None: in-flight requests may take as long as they need (uvicorn's default).
            if drain is not None:
                self._deadline = time.monotonic() + drain + EXIT_GRACE_SECONDS
        else:
            logger.warning("stop requested again: forcing workers to exit")
        for worker in self._workers.values():
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()

    def _kill_all(self) -> None:
        for worker in self._workers.values():
            if worker.process.is_alive():
                logger.warning("worker pid %d did not stop in time; killing it", worker.process.pid)
                worker.process.kill()
        self._deadline = None


def _url(sock: socket.socket, config: Config) -> str:
    where = describe_address(sock)
    if sock.family == socket.AF_UNIX:
        return where
    return f"{'https' if config.is_ssl else 'http'}://{where}"


def _worker_main(
    config: Config, sock: socket.socket, status: Connection, lifeline: Connection
) -> None:
    """Entry point of a worker process (runs after spawn, so it imports nea afresh).

    ``lifeline`` reaches EOF when the supervisor dies (even by SIGKILL): the worker then
    drains and exits instead of serving on as an orphan.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging_from(config)
    from nea._loops import run_on_loop
    from nea._run import serve_until_signalled

    def on_started() -> None:
        status.send("started")

    try:
        run_on_loop(
            serve_until_signalled(
                config.replace(workers=1),
                [sock],
                signals=(signal.SIGTERM,),
                on_started=on_started,
                stop_when_readable=lifeline.fileno(),
            ),
            loop=config.loop,
        )
    except NeaError as exc:
        # Before "started" the parent re-raises this; after it, the exit code tells.
        with contextlib.suppress(Exception):
            status.send(exc)
        raise SystemExit(1) from None
    finally:
        status.close()
        lifeline.close()
        sock.close()
