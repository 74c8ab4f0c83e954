"""Prometheus metrics of the hub, served on a local port ([metrics] listen in hub.toml).

Each HubMetrics has its own registry, so several hubs (or tests) in one process do not clash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hub.config import HubConfig
from hub.errors import HubError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9154"


def metrics_listen(config: HubConfig) -> tuple[str, int] | None:
    """[metrics] listen = "host:port" (default 127.0.0.1:9154); "" turns the endpoint off."""
    section = config.section("metrics")
    listen = section.text("listen", DEFAULT_LISTEN)
    section.done()
    if listen == "":
        return None
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        section.fail("listen", listen, 'must be host:port, or "" for no metrics endpoint')
    return host.strip("[]"), int(port)


class HubMetrics:
    """Envelopes by result and reason, batch sizes, commit latency, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.envelopes = Counter(
            "hedgerow_hub_envelopes",
            "Messages handled, by result (stored, duplicate, rejected, ignored, held, released, "
            "dropped) and reason",
            ["result", "reason"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "hedgerow_hub_batch_size",
            "Messages per committed batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "hedgerow_hub_commit_seconds",
            "Time to write and commit one batch (store and rules)",
            registry=self.registry,
        )
        self.latency_seconds = Histogram(
            "hedgerow_hub_ingest_latency_seconds",
            "From a message's arrival at the hub to its batch's commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.opening_replaced = Counter(
            "hedgerow_hub_opening_workers_replaced",
            "Opening worker processes that died or hung and were replaced",
            registry=self.registry,
        )
        self.broker_reloads = Counter(
            "hedgerow_hub_broker_reloads",
            "Runs of [enroll] broker_reload after an enrolment, by result (ok, failed)",
            ["result"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "hedgerow_hub_queue_depth", "Messages waiting for ingest", registry=self.registry
        )
        self.receipts = Counter(
            "hedgerow_hub_receipts",
            "Delivery receipts (hub/receipts), by result: published, failed (a round or a "
            "publish, tried again), declared (a device's spool floor applied), settled (a seq "
            "refused for good counted as processed), overflow (a commit hint dropped)",
            ["result"],
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def count(self, result: str, reason: str = "", n: int = 1) -> None:
        """Add n messages with this result (and rejection reason)."""
        self.envelopes.labels(result, reason).inc(n)

    def value(self, result: str, reason: str = "") -> float:
        """The current count for a result/reason (for tests and the bench)."""
        sample = self.registry.get_sample_value(
            "hedgerow_hub_envelopes_total", {"result": result, "reason": reason}
        )
        return sample or 0.0

    def track_queue(self, depth: Callable[[], int]) -> None:
        """Report the queue's depth whenever metrics are scraped."""
        self.queue_depth.set_function(lambda: float(depth()))

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; return the port (useful with port 0)."""
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise HubError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        bound = int(self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop the HTTP endpoint and join its thread."""
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None
