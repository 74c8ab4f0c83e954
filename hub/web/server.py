"""WebServer: the dashboard served by uvicorn in a thread of its own, beside ingest.

uvicorn runs its own event loop in that thread and the handlers run in its thread pool, so
nothing of the dashboard ever runs on an ingest thread."""

from __future__ import annotations

import logging
import ssl
import threading
import time

import uvicorn

from hub.config import HubConfig
from hub.errors import HubError
from hub.store import Database
from hub.web.app import create_app

log = logging.getLogger(__name__)


class WebError(HubError):
    """The dashboard cannot be served as configured (its TLS files)."""


def _check_tls(config: HubConfig) -> None:
    web = config.web
    if web.tls_cert is None or web.tls_key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            web.tls_cert, web.tls_key
        )
    except (OSError, ssl.SSLError) as exc:
        raise WebError(
            f"{config.path}: [web] tls_cert {web.tls_cert} / tls_key {web.tls_key}: "
            f"cannot be loaded ({exc})"
        ) from exc


class WebServer:
    """The dashboard's HTTP(S) server: start(), wait_ready(), stop()."""

    def __init__(self, config: HubConfig) -> None:
        _check_tls(config)
        web = config.web
        host, _, port = web.listen.rpartition(":")
        app = create_app(config, lambda: Database(config.database_url))
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host.strip("[]"),
                port=int(port),
                ssl_certfile=None if web.tls_cert is None else str(web.tls_cert),
                ssl_keyfile=None if web.tls_key is None else str(web.tls_key),
                log_config=None,  # our logging, as configured by the command line
                access_log=False,  # URLs carry filters and ids: not for the journal
                lifespan="off",
                server_header=False,
                # Nothing stands in front of the hub: X-Forwarded-For from a local process
                # must not change the address the login limiter counts.
                proxy_headers=False,
            )
        )
        self._thread = threading.Thread(target=self._run, name="hedgerow-web", daemon=True)
        self._failed: BaseException | None = None
        self._reported = False
        self.listen = web.listen

    def _run(self) -> None:
        try:
            self._server.run()
        except SystemExit as exc:  # uvicorn's answer to a port it cannot bind; it logged why
            self._failed = exc
        except BaseException as exc:  # reported by check_health
            self._failed = exc
            log.exception("the dashboard server stopped")

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the server listens (True). A server that cannot listen (the port is
        taken: a second hub process on one machine) is logged as an error, not raised: the
        alerts and their emails matter more than the pages, so ingest goes on without them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._server.started:
            self._thread.join(0.05)  # returns at once when the thread has ended
            if not self._thread.is_alive():
                break
        if self._server.started:
            log.info("dashboard listening on %s", self.listen)
            return True
        self.check_health()
        return False

    @property
    def healthy(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread.is_alive() and self._failed is None

    def check_health(self) -> None:
        """Log an error, once, if the dashboard is not being served (any more)."""
        if not self.healthy and not self._reported:
            self._reported = True
            log.error(
                "the dashboard is not served on %s (see the errors above); ingest, alerts and "
                "notifications carry on",
                self.listen,
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish requests in flight, and join the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
