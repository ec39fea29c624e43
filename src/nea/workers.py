"""A gunicorn worker class: ``gunicorn -k nea.workers.NeaWorker main:app``.

Owns: turning gunicorn's settings and the ``NEA_*`` environment variables into a ``Config``,
serving gunicorn's listening sockets with ``nea.Server`` (budgets, slots, queue, the memory
plan logged by each worker), gunicorn's heartbeat, and its signals: SIGTERM (sent to old
workers on HUP, and on a graceful stop) drains in-flight requests; SIGINT, SIGQUIT and
SIGHUP stop the same way, and a second signal forces the exit. The gunicorn master owns the
processes: it binds, forks, restarts and reloads. Must not import the CLI's ``main`` (the
options table only).

gunicorn is not a dependency of nea: this module imports it, so only gunicorn imports this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from nea._errors import NeaError
from nea._loops import run_on_loop
from nea._options import environment_values
from nea._run import serve_until_signalled
from nea.config import Config

# gunicorn's settings that mean the same as a nea option, read unless NEA_<OPTION> is set.
_LOG_LEVELS = {"critical", "error", "warning", "info", "debug"}


def config_from_gunicorn(cfg: Any, app: Any, *, max_requests: int | None) -> Config:
    """The ``Config`` of one worker: ``NEA_*`` variables first, then gunicorn's settings
    (keep-alive, graceful timeout, max requests, forwarded IPs, TLS, log level).
    Raises ``ConfigError`` for a bad variable."""
    values = environment_values(os.environ)
    gunicorn_values: dict[str, Any] = {
        "timeout_keep_alive": float(cfg.keepalive),
        "timeout_graceful_shutdown": float(cfg.graceful_timeout),
        "forwarded_allow_ips": tuple(_ips(cfg.forwarded_allow_ips)),
        "log_level": cfg.loglevel.lower() if cfg.loglevel.lower() in _LOG_LEVELS else "info",
        "access_log": cfg.accesslog is not None,
    }
    if max_requests is not None:
        gunicorn_values["limit_max_requests"] = max_requests
    if cfg.is_ssl:
        gunicorn_values.update(
            ssl_certfile=cfg.certfile,
            ssl_keyfile=cfg.keyfile,
            ssl_version=int(cfg.ssl_version),
            ssl_cert_reqs=int(cfg.cert_reqs),
            ssl_ca_certs=cfg.ca_certs,
            ssl_ciphers=cfg.ciphers,
        )
    for name, value in gunicorn_values.items():
        values.setdefault(name, value)
    # gunicorn's master owns the processes and the sockets; --metrics needs nea's supervisor.
    for owned_by_gunicorn in ("workers", "reload", "metrics", "uds", "fd"):
        if values.pop(owned_by_gunicorn, None) is not None:
            logging.getLogger("nea.error").warning(
                "NEA_%s is ignored under gunicorn (its master owns processes and sockets)",
                owned_by_gunicorn.upper(),
            )
    return Config(app=app, **values)


def _ips(setting: Any) -> list[str]:
    if isinstance(setting, str):
        return [ip.strip() for ip in setting.split(",") if ip.strip()]
    return [str(ip) for ip in setting]


class NeaWorker(Worker):  # type: ignore[misc]
    """Serves an ASGI app in a gunicorn worker process with nea's per-request budgets."""

    def init_signals(self) -> None:
        # The event loop installs its own handlers (serve_until_signalled); gunicorn's would
        # exit without draining. SIGUSR1 still reopens gunicorn's log files.
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def run(self) -> None:
        """Serve until a signal; a worker that cannot start exits with gunicorn's
        ``WORKER_BOOT_ERROR`` so the master stops instead of restarting it in a loop."""
        self._route_logs()
        try:
            max_requests = self.max_requests if self.max_requests < sys.maxsize else None
            config = config_from_gunicorn(self.cfg, self.wsgi, max_requests=max_requests)
            run_on_loop(self._serve(config), loop=config.loop)
        except NeaError as exc:
            self.log.error("nea worker (pid %d) could not start: %s", os.getpid(), exc)
            raise SystemExit(Arbiter.WORKER_BOOT_ERROR) from None

    async def _serve(self, config: Config) -> None:
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            await serve_until_signalled(
                config,
                [listener.sock for listener in self.sockets],
                # SIGHUP too: a HUP sent to the whole process group must not kill a worker
                # with requests in flight (gunicorn's master itself sends old workers SIGTERM).
                signals=(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP),
            )
        finally:
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        """Tell the master this worker is alive (gunicorn kills silent ones after
        ``--timeout``); stop gracefully when the master is gone."""
        interval = max(self.timeout / 2.0, 0.5) if self.timeout else 1.0
        while True:
            self.notify()
            if os.getppid() != self.ppid:
                self.log.info("Parent changed, shutting down: %s", self)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(interval)

    def _route_logs(self) -> None:
        """nea's records go to gunicorn's error and access logs, in gunicorn's format."""
        error = logging.getLogger("nea.error")
        error.handlers = list(self.log.error_log.handlers)
        error.setLevel(self.log.error_log.level)
        error.propagate = False
        access = logging.getLogger("nea.access")
        access.handlers = list(self.log.access_log.handlers)
        access.setLevel(logging.INFO if self.cfg.accesslog is not None else logging.CRITICAL + 1)
        access.propagate = False
