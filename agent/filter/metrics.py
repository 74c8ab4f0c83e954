"""Prometheus metrics for hedgerow-dns: the only module that imports prometheus_client.

Per-query counting is plain ints in dicts (a labelled prometheus Counter takes a lock and a
label lookup per increment, several times the cost of answering a blocked query); a collector
turns them into metric families when /metrics is scraped. prometheus_client itself (about
5 MB resident) is imported only when a registry is first needed: when [server] metrics is set,
or when a test reads a value.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from agent.filter.spec import Endpoint
from agent.filter.verdict import Verdict

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)
# One list's health for /metrics: category, source, missing (no copy at all), failed fetches.
ListHealth = tuple[str, str, bool, int]
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 2.5)


class _Callbacks:
    """Values read when scraped: answers by verdict, latency, cache, and sinks' counters."""

    def __init__(self) -> None:
        self.cache: Callable[[], tuple[int, int, int]] | None = None
        self.extra: list[Callable[[], dict[str, float]]] = []
        self.answers: dict[tuple[str, str, str], int] = {}
        self.dropped: dict[str, int] = {}
        self.tcp: dict[str, int] = {}  # TCP connections closed by reason, and "paused"
        self.upstream_errors: dict[tuple[str, str], int] = {}
        # counts per bucket, then +Inf, then the sum of all observations
        self.latency: list[float] = [0] * (len(LATENCY_BUCKETS) + 2)
        self.lists: Callable[[], list[ListHealth]] | None = None

    def collect(self) -> Iterator[Any]:
        """Metric families from the current counts (called by the registry when scraped)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        dropped = CounterMetricFamily(
            "hedgerow_dns_dropped", "Packets dropped unanswered", labels=["reason"]
        )
        for reason, count in list(self.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        tcp = dict(self.tcp)
        paused = tcp.pop("paused", 0)
        closed = CounterMetricFamily(
            "hedgerow_dns_tcp_closed",
            "TCP connections we closed (idle, slow, overflow, client_limit, table_full)",
            labels=["reason"],
        )
        for reason, count in tcp.items():
            closed.add_metric([reason], count)
        yield closed
        yield CounterMetricFamily(
            "hedgerow_dns_tcp_paused",
            "Times a TCP connection was not read because its answers were not being read",
            value=paused,
        )
        upstream = CounterMetricFamily(
            "hedgerow_dns_upstream_errors", "Failed upstream attempts", labels=["server", "reason"]
        )
        for key, count in list(self.upstream_errors.items()):
            upstream.add_metric(list(key), count)
        yield upstream
        queries = CounterMetricFamily(
            "hedgerow_dns_queries",
            "Answered queries by verdict, category and group",
            labels=["verdict", "category", "group"],
        )
        for labels, count in list(self.answers.items()):  # list(): one atomic copy
            queries.add_metric(labels, count)
        yield queries
        *counts, total = list(self.latency)
        cumulative = 0.0
        buckets = []
        for bound, in_bucket in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
            cumulative += in_bucket
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "hedgerow_dns_latency_seconds",
            "Time from packet in to answer out",
            buckets=buckets,
            sum_value=total,
        )
        if self.cache is not None:
            hits, misses, size = self.cache()
            yield CounterMetricFamily("hedgerow_dns_cache_hits", "Cache hits", value=hits)
            yield CounterMetricFamily("hedgerow_dns_cache_misses", "Cache misses", value=misses)
            yield GaugeMetricFamily("hedgerow_dns_cache_entries", "Cached answers", value=size)
            ratio = hits / (hits + misses) if hits + misses else 0.0
            yield GaugeMetricFamily("hedgerow_dns_cache_hit_ratio", "Cache hit ratio", value=ratio)
        for source in self.extra:
            for name, value in source().items():
                yield GaugeMetricFamily(
                    f"hedgerow_dns_{name}", f"{name} (from a sink)", value=value
                )
        if self.lists is not None:
            health = self.lists()
            missing = GaugeMetricFamily(
                "hedgerow_dns_list_missing",
                "1 while a list has no copy at all (served without it, retried with backoff)",
                labels=["category", "list"],
            )
            failures = CounterMetricFamily(
                "hedgerow_dns_list_fetch_failures",
                "Failed attempts to take a new copy of a list",
                labels=["category", "list"],
            )
            for category, listed, is_missing, failed in health:
                missing.add_metric([category, listed], float(is_missing))
                failures.add_metric([category, listed], failed)
            yield missing
            yield failures


class Metrics:
    """Counters and a latency histogram; a registry of their own (one per server) is made
    when first needed."""

    def __init__(self) -> None:
        self._callbacks = _Callbacks()
        self._registry: CollectorRegistry | None = None
        # The hot path counts into these directly (see listeners.py).
        self.answers = self._callbacks.answers
        self.latency = self._callbacks.latency
        self._http: Any = None
        self._thread: threading.Thread | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The prometheus registry reading these counters (imports prometheus_client)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()
            self._registry.register(self._callbacks)
        return self._registry

    def answered(self, verdict: Verdict, seconds: float) -> None:
        """Count one answered query (called on the event loop only)."""
        answers = self.answers
        key = verdict.labels
        answers[key] = answers.get(key, 0) + 1
        latency = self.latency  # timed(1, seconds), inlined: this runs per query
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency[-1] += seconds

    def timed(self, count: int, seconds: float) -> None:
        """Add `count` answers that each took `seconds` to the latency histogram (a batch of
        UDP answers sent together; their verdicts are counted in `answers` one by one)."""
        latency = self.latency
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += count
        latency[-1] += seconds * count

    def dropped(self, reason: str) -> None:
        """Count a packet that could not be answered (too short, or a response)."""
        dropped = self._callbacks.dropped
        dropped[reason] = dropped.get(reason, 0) + 1

    def tcp_event(self, event: str) -> None:
        """Count a TCP connection closed by us (by reason) or paused ("paused")."""
        tcp = self._callbacks.tcp
        tcp[event] = tcp.get(event, 0) + 1

    def upstream_error(self, server: str, reason: str) -> None:
        """Count a failed upstream attempt."""
        errors = self._callbacks.upstream_errors
        errors[server, reason] = errors.get((server, reason), 0) + 1

    def watch_cache(self, read: Callable[[], tuple[int, int, int]]) -> None:
        """Report (hits, misses, size) from this callback when scraped."""
        self._callbacks.cache = read

    def watch(self, read: Callable[[], dict[str, float]]) -> None:
        """Report a sink's own counters (name -> value) when scraped."""
        self._callbacks.extra.append(read)

    def watch_lists(self, read: Callable[[], list[ListHealth]]) -> None:
        """Report each list's health (missing, failed fetches) from this callback when scraped."""
        self._callbacks.lists = read

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A current sample value (0 if absent), for tests and selftest."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def serve(self, endpoint: Endpoint) -> None:
        """Expose /metrics over HTTP on the endpoint (a loopback address is wise)."""
        from prometheus_client import start_http_server

        try:
            self._http, self._thread = start_http_server(
                endpoint.port, endpoint.host, registry=self.registry
            )
        except OSError as exc:
            raise endpoint.bind_failed(exc, "metrics ([server] metrics)") from exc
        log.info("metrics on http://%s/metrics", endpoint.text)

    def close(self) -> None:
        """Stop the HTTP endpoint, if running."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
