"""hedgerow-dns's reports: a QuerySink that summarises answered queries per client and interval.

Hot path: offer() appends to a bounded deque (O(1), no lock, never blocks); when the deque is full
the record is dropped and counted. A worker thread drains it into a Window (report_window.py);
blocked queries in an `immediate` category also leave at once as a rate-limited EVENT. Every
`interval_s` the worker hands one SUMMARY per client seen, plus a HEARTBEAT, to the Publisher,
which seals, spools and delivers them (agent/report/). stop() flushes the current window.

The worker also keeps ClientNames (agent/dns/clients/) current and names each record's client
as it tallies it: the device name and MAC at that moment go with the record, so a lease that
changes later does not rename what came before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.dns import selftest_inbox
from agent.dns.arp import ARP_PATH
from agent.dns.client_window import (
    DEFAULT_LIMITS,
    PAYLOAD_VERSION,
    ImmediateEvents,
    Known,
    Window,
    WindowLimits,
)
from agent.dns.clients.names import ClientNames
from agent.dns.config.model import ClientsConfig
from agent.filter.querylog import QueryRecord
from agent.report import Publisher, PublisherStats
from common.errors import ConfigError
from common.text import printable
from common.tomlconfig import toml_value
from common.wire.header import Kind

log = logging.getLogger(__name__)
SELFTEST_POLL_S = 2.0  # how often the selftest inbox is looked at


def _software() -> str:
    try:
        return f"hedgerow-dns {metadata.version('hedgerow')}"
    except metadata.PackageNotFoundError:
        return "hedgerow-dns unknown"


@dataclass(frozen=True, slots=True)
class DnsReportStats:
    """Counters of the DNS reporter, for Prometheus metrics (all monotonic but `publisher`'s
    spool size and connection state)."""

    offered: int
    dropped_queue_full: int
    summaries: int
    events: int
    events_suppressed: int  # immediate events held back by the per-window rate limit
    clients_dropped: int  # records from clients beyond the per-window client limit
    publisher: PublisherStats


class DnsReporter:
    """Summaries, immediate events and heartbeats from hedgerow-dns to the hub.

    Wire it from the parsed [report] settings; the broker comes from the identity's mqtt.json
    unless `broker_url` (e.g. [report] hub) overrides it. Raises IdentityError if not enrolled::

        reporter = DnsReporter(cfg.identity, cfg.interval_s, cfg.immediate,
                               cfg.identity / "spool", broker_url=cfg.hub)
        reporter.start()   # then pass it to the server as a QuerySink
        ...
        reporter.stop()    # flushes the window, sends a clean-stop heartbeat
    """

    def __init__(
        self,
        identity_dir: Path,
        interval_s: int,
        immediate: Sequence[str],
        spool_dir: Path,
        *,
        max_spool_bytes: int = 64 * 1024 * 1024,
        queue_size: int = 65_536,
        limits: WindowLimits = DEFAULT_LIMITS,
        max_events_per_window: int = 200,
        software: str | None = None,
        arp_path: Path = ARP_PATH,
        clients: ClientsConfig | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.1,
        **publisher_options: Any,
    ) -> None:
        if type(interval_s) is not int or interval_s <= 0:
            raise ConfigError(
                f"[report] interval_s = {toml_value(interval_s)}: must be a positive integer"
            )
        if queue_size <= 0:
            raise ConfigError(f"[report] queue_size = {toml_value(queue_size)}: must be positive")
        self._interval_s = interval_s
        self._queue_size = queue_size
        self._limits = limits
        self._software = software or _software()
        self._clock = clock
        self._poll_s = poll_s
        self._started_at = time.monotonic()
        self.policy_version = 0  # set by the daemon once policies exist
        # The hand-off: appended by the hot path, popped by the worker; deque ops are atomic.
        self._queue: deque[QueryRecord] = deque()
        self._offered = 0
        self._dropped = 0
        # Worker-owned.
        self._events = ImmediateEvents(immediate, max_events_per_window)
        self._window = Window(self._now_ms(), limits)
        self._names = ClientNames(clients or ClientsConfig(), arp_path=arp_path, clock=clock)
        # reconfigure() sets the wanted [clients]; the worker applies it (no lock: one reference)
        self._clients_wanted = self._clients_applied = self._names.config
        self._summaries = 0
        self._sent_events = 0
        self._identity = identity_dir
        self._selftests_sent = 0
        self._selftests_bad = 0
        self._next_inbox = 0.0
        self._selftests_done: set[str] = set()  # sent, but the file could not be deleted
        self._clients_dropped = 0
        self._publisher = Publisher.open(
            identity_dir,
            spool_dir,
            self._heartbeat,
            max_spool_bytes=max_spool_bytes,
            clock=clock,
            **publisher_options,
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _heartbeat(self) -> dict[str, Any]:
        return {
            "v": PAYLOAD_VERSION,
            "uptime_s": int(time.monotonic() - self._started_at),
            "policy_version": self.policy_version,
            "software": self._software[:63],
            "filter_active": True,
        }

    def offer(self, record: QueryRecord) -> None:
        """QuerySink: take a record without blocking; drop and count it if the queue is full."""
        self._offered += 1
        if len(self._queue) >= self._queue_size:
            self._dropped += 1
            return
        self._queue.append(record)

    def report_health(
        self, source: str, category: str, statutory: bool, problem: str, detail: str
    ) -> None:
        """HealthSink (agent/dns/service.py): one `health` event about a list the filter serves
        without, or has again (docs/protocol.md 6.4). Never blocks: the publisher queues it."""
        event = {
            "v": PAYLOAD_VERSION,
            "type": "health",
            "at": self._now_ms(),
            "detail": {
                "problem": problem,
                "list": printable(source)[:1024],
                "category": category,
                "statutory": statutory,
                "error": printable(detail)[:1024],
            },
        }
        if self._publisher.offer(Kind.EVENT, event, urgent=True):
            self._sent_events += 1

    def start(self) -> None:
        """Start the publisher (broker link, spool delivery) and the summarising thread."""
        if self._thread is not None:
            return
        self._names.poll()
        self._publisher.start()
        self._thread = threading.Thread(target=self._run, name="hedgerow-dns-report", daemon=True)
        self._thread.start()

    def known(self, ip: str) -> Known | None:
        """What a record from `ip` tallied now would be named as (status, tests)."""
        return self._names.lookup(ip)

    def reconfigure(self, clients: ClientsConfig) -> None:
        """Use a reloaded [clients] from the worker's next round (any thread may call this)."""
        self._clients_wanted = clients

    def stop(self, timeout: float = 5.0) -> None:
        """Flush the current window, then stop the publisher (clean-stop heartbeat included)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join()
        self._thread = None
        self._publisher.stop(timeout)

    def stats(self) -> DnsReportStats:
        """A snapshot of the counters."""
        return DnsReportStats(
            offered=self._offered,
            dropped_queue_full=self._dropped,
            summaries=self._summaries,
            events=self._sent_events,
            events_suppressed=self._events.suppressed,
            clients_dropped=self._clients_dropped + self._window.clients_dropped,
            publisher=self._publisher.stats(),
        )

    def counters(self) -> dict[str, float]:
        """The stats as flat metric samples (hedgerow-dns reads them at scrape time)."""
        stats = self.stats()
        pub = stats.publisher
        return {
            "reports_offered": stats.offered,
            "reports_dropped_queue_full": stats.dropped_queue_full,
            "reports_summaries": stats.summaries,
            "reports_events": stats.events,
            "reports_events_suppressed": stats.events_suppressed,
            "reports_clients_dropped": stats.clients_dropped,
            "reports_spooled": pub.spooled,
            "reports_spool_dropped": pub.spool_dropped,
            "reports_spool_entries": pub.spool_entries,
            "reports_spool_bytes": pub.spool_bytes,
            "reports_delivered": pub.delivered,
            "reports_receipted": pub.receipted,
            "reports_resent": pub.resent,
            "reports_receipts_ignored": pub.receipts_ignored,
            "reports_publisher_dropped": pub.dropped_queue_full,
            "reports_broker_connected": float(pub.connected),
            "reports_selftests_sent": self._selftests_sent,
            "reports_selftests_bad": self._selftests_bad,
            **self._names.counters(),
        }

    def _run(self) -> None:
        next_flush = time.monotonic() + self._interval_s
        while True:
            stopping = self._stopping.wait(self._poll_s)
            try:
                self._refresh_names()
                self._drain()
                self._send_selftests()
                if stopping or time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self._interval_s
                    self._flush(heartbeat=not stopping)
            except Exception:
                # Contain the unexpected: reporting must outlive one bad record.
                log.exception("DNS reporter: unexpected error; continuing")
            if stopping:
                return

    def _refresh_names(self) -> None:
        wanted = self._clients_wanted
        if wanted is not self._clients_applied:
            self._names.configure(wanted)
            self._clients_applied = wanted
        self._names.poll()  # a stat per lease file every check_s; parsed only when changed

    def _send_selftests(self) -> None:
        """Offer each `hedgerow-dns selftest` result waiting (agent/dns/selftest_inbox.py) as
        an urgent `selftest` event; a result stays until the publisher takes it."""
        now = time.monotonic()
        if now < self._next_inbox:
            return
        self._next_inbox = now + SELFTEST_POLL_S
        for path, at, detail in selftest_inbox.waiting(self._identity):
            if path.name in self._selftests_done:
                continue
            if at is not None:
                event = {"v": PAYLOAD_VERSION, "type": "selftest", "at": at, "detail": detail}
                if not self._publisher.offer(Kind.EVENT, event, urgent=True):
                    return  # the queue is full: the files wait for the next look
                self._selftests_sent += 1
                self._sent_events += 1
                log.info("selftest result of %s sent to the hub", path.name)
            else:
                self._selftests_bad += 1
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("selftest result %s sent but not deleted: %s", path, exc)
                self._selftests_done.add(path.name)

    def _drain(self) -> None:
        queue = self._queue
        lookup = self._names.lookup
        while queue:
            record = queue.popleft()
            known = lookup(record.client_ip)
            self._window.add(record, known)
            event = self._events.check(record, None, known)
            # Events are the categories reported at once: ahead of the summaries (urgent).
            if event is not None and self._publisher.offer(Kind.EVENT, event, urgent=True):
                self._sent_events += 1

    def _flush(self, *, heartbeat: bool) -> None:
        end = self._now_ms()
        window, self._window = self._window, Window(end, self._limits)
        self._events.new_window()
        self._clients_dropped += window.clients_dropped
        if window.clients_dropped:
            log.warning(
                "DNS report window had more than %d clients; %d records not summarised",
                self._limits.max_clients,
                window.clients_dropped,
            )
        for summary in window.summaries(end):
            if self._publisher.offer(Kind.SUMMARY, summary):
                self._summaries += 1
        if heartbeat:  # on stop, the publisher sends the clean-stop heartbeat instead
            self._publisher.offer(Kind.HEARTBEAT, self._heartbeat())
