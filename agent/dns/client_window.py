"""Pure aggregation of DNS query records into per-client summaries and immediate events.

No threads, no I/O: agent/dns/client_reports.py feeds records in and sends what comes out. Times are
milliseconds since the Unix epoch, like QueryRecord.time_ms and the envelope header.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.filter.querylog import QueryRecord
from common.text import dns_presentation

PAYLOAD_VERSION = 1
# Verdict values (agent/filter/verdict.py) that count as "what was blocked": category blocks and
# anti-bypass names (DoH canaries, Private Relay). "filtered" withholds some records of a site
# that still works (SafeSearch HTTPS, ECH), so it counts as allowed.
BLOCKED_VERDICTS = frozenset({"blocked", "bypass"})
# Verdicts that answered a name the client then used; refused, servfail, formerr, notimp and
# beacon answers are only counted.
ALLOWED_VERDICTS = frozenset({"resolved", "cached", "rewritten", "filtered"})
UNCATEGORISED = "uncategorised"
OTHER = "other"

# Approximate registrable domains: the last two labels, or more under these public suffixes.
# A small built-in table, not the Public Suffix List: good enough to group "what a pupil used"
# (www.bbc.co.uk and news.bbc.co.uk -> bbc.co.uk) without shipping and updating the PSL.
# The value is how many labels the registrable domain keeps. sch.uk is a wildcard suffix in the
# PSL (<school>.<authority>.sch.uk), hence four.
PUBLIC_SUFFIX_LABELS: Mapping[str, int] = {
    **{
        f"{second}.uk": 3
        for second in ("co", "org", "ac", "gov", "nhs", "police", "ltd", "plc", "me", "net", "mod")
    },
    "sch.uk": 4,
    **{f"{second}.au": 3 for second in ("com", "net", "org", "edu", "gov", "asn", "id")},
    **{f"{second}.nz": 3 for second in ("co", "org", "net", "ac", "govt", "school")},
    **{f"{second}.za": 3 for second in ("co", "org", "ac", "gov")},
    **{f"{second}.jp": 3 for second in ("co", "ac", "ne", "or", "go")},
    **{f"{second}.in": 3 for second in ("co", "org", "net", "ac", "gov")},
    **{
        f"com.{tld}": 3
        for tld in ("br", "cn", "mx", "sg", "hk", "tr", "ar", "my", "ng", "pk", "ph", "tw", "ua")
    },
    **{f"co.{tld}": 3 for tld in ("kr", "il", "id", "th", "ke")},
    "in-addr.arpa": 2,
    "ip6.arpa": 2,
}


def registrable_domain(name: str) -> str:
    """The approximate registrable domain of a normalised name (see PUBLIC_SUFFIX_LABELS)."""
    labels = name.rstrip(".").lower().split(".")
    keep = 2
    for suffix_len in (2, 1):
        if len(labels) > suffix_len:
            suffix = ".".join(labels[-suffix_len:])
            if suffix in PUBLIC_SUFFIX_LABELS:
                keep = PUBLIC_SUFFIX_LABELS[suffix]
                break
    return ".".join(labels[-keep:])


@dataclass(frozen=True, slots=True)
class Known:
    """What the filter knew of a client address when one of its queries was tallied.

    `hostname` and `mac` come from the static table or a DHCP lease: they say which device held
    the address, so they are part of a tally's key (an address that changes hands mid-window
    gives two summaries, one per device). `arp_mac`, from the kernel's ARP table, only fills in
    a MAC the lease did not give: it appears a little after a device does and must not split
    one device's window in two.
    """

    hostname: str | None = None
    mac: str | None = None
    arp_mac: str | None = None


@dataclass(frozen=True, slots=True)
class Client:
    """Who asked: the querying address, its policy group and, where known, the device name and
    the MAC its lease or the static table gave (see Known)."""

    ip: str
    group: str
    hostname: str | None = None
    mac: str | None = None

    @classmethod
    def of(cls, record: QueryRecord, known: Known | None) -> Client:
        """The client of a record, named as `known` says."""
        if known is None:
            return cls(record.client_ip, record.group)
        return cls(record.client_ip, record.group, known.hostname, known.mac)

    def document(self, mac: str | None) -> dict[str, str]:
        """The payload's `client` object (mac and hostname only when known; `mac` fills in
        when the binding gave none)."""
        doc = {"ip": self.ip[:64], "group": self.group[:63]}
        mac = self.mac or mac
        if mac:
            doc["mac"] = mac[:32]
        if self.hostname:
            doc["hostname"] = self.hostname[:255]
        return doc


@dataclass(slots=True)
class _ClientTally:
    first_seen: int
    last_seen: int
    counts: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    blocked: Counter[tuple[str, str]] = field(default_factory=Counter)
    allowed: Counter[str] = field(default_factory=Counter)
    arp_mac: str | None = None  # the first ARP MAC seen for this client in the window


@dataclass(frozen=True, slots=True)
class WindowLimits:
    """Bounds that keep one window's memory and one summary's envelope small."""

    max_clients: int = 4096
    max_blocked: int = 500  # distinct blocked names listed per client (counts stay exact)
    max_allowed: int = 2000  # distinct allowed domains tracked per client
    max_keys: int = 200  # distinct verdicts or categories per client (payload maps allow 256)
    top_n: int = 20


DEFAULT_LIMITS = WindowLimits()


class Window:
    """One interval's tallies per client; `summaries()` turns them into SUMMARY documents."""

    def __init__(self, start_ms: int, limits: WindowLimits = DEFAULT_LIMITS) -> None:
        self.start_ms = start_ms
        self.limits = limits
        self.clients_dropped = 0  # records from clients beyond max_clients
        self._tallies: dict[Client, _ClientTally] = {}

    def __len__(self) -> int:
        return len(self._tallies)

    def add(self, record: QueryRecord, known: Known | None = None) -> None:
        """Count one answered query, from the device `known` names (what the lease files and
        the static table said when it was tallied: later changes do not rename it)."""
        client = Client.of(record, known)
        time_ms, qname, verdict, category = (
            record.time_ms,
            dns_presentation(record.qname, 255),  # attacker-chosen bytes: printable on the wire
            record.verdict,
            record.category,
        )
        tally = self._tallies.get(client)
        if tally is None:
            if len(self._tallies) >= self.limits.max_clients:
                self.clients_dropped += 1
                return
            tally = self._tallies[client] = _ClientTally(time_ms, time_ms)
        if tally.arp_mac is None and known is not None:
            tally.arp_mac = known.arp_mac
        tally.first_seen = min(tally.first_seen, time_ms)
        tally.last_seen = max(tally.last_seen, time_ms)
        _bump(tally.counts, verdict, self.limits.max_keys)
        if category is not None and verdict in BLOCKED_VERDICTS:
            # blocked lookups by category: a SafeSearch rewrite or an ECH strip is an answer,
            # not an attempt, and the hub counts `categories` as attempts (docs/protocol.md)
            _bump(tally.categories, category, self.limits.max_keys)
        if verdict in BLOCKED_VERDICTS:
            key = (qname, category or UNCATEGORISED)
            if key in tally.blocked or len(tally.blocked) < self.limits.max_blocked:
                tally.blocked[key] += 1
        elif verdict in ALLOWED_VERDICTS:
            domain = registrable_domain(qname)
            if domain in tally.allowed or len(tally.allowed) < self.limits.max_allowed:
                tally.allowed[domain] += 1

    def summaries(self, end_ms: int, macs: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """One SUMMARY document per client seen (common/wire/payload.py's schema); `macs`
        (address -> MAC) fills in a MAC nothing else gave."""
        macs = macs or {}
        out = []
        for client, tally in self._tallies.items():
            blocked = sorted(tally.blocked.items(), key=lambda item: (-item[1], item[0]))
            allowed = sorted(tally.allowed.items(), key=lambda item: (-item[1], item[0]))
            out.append(
                {
                    "v": PAYLOAD_VERSION,
                    "source": "dns",
                    "start": self.start_ms,
                    "end": end_ms,
                    "client": client.document(tally.arp_mac or macs.get(client.ip)),
                    "counts": dict(tally.counts),
                    "categories": dict(tally.categories),
                    "blocked": [
                        {"name": name, "category": category, "count": count}
                        for (name, category), count in blocked
                    ],
                    "top_allowed": [
                        {"domain": domain, "count": count}
                        for domain, count in allowed[: self.limits.top_n]
                    ],
                    "first_seen": tally.first_seen,
                    "last_seen": tally.last_seen,
                }
            )
        return out


def _bump(counter: Counter[str], key: str, max_keys: int) -> None:
    key = key[:63]
    if key in counter or len(counter) < max_keys:
        counter[key] += 1
    else:
        counter[OTHER] += 1


class ImmediateEvents:
    """Decides which blocked queries are also sent at once as EVENTs, rate-limited per window.

    A (client, name) pair raises at most one event per window, and at most `max_per_window`
    events leave per window in all, so a looping client cannot flood the hub; the summary still
    counts every query.
    """

    def __init__(self, categories: Collection[str], max_per_window: int = 200) -> None:
        self.categories = frozenset(categories)
        self.max_per_window = max_per_window
        self.suppressed = 0
        self._seen: set[tuple[Client, str]] = set()
        self._sent = 0

    def check(
        self, record: QueryRecord, mac: str | None = None, known: Known | None = None
    ) -> dict[str, Any] | None:
        """The EVENT document to send now for this query, or None; the client is named as
        `known` says, with `mac` (or its ARP MAC) filling in a MAC the binding did not give."""
        category = record.category
        if record.verdict not in BLOCKED_VERDICTS or category not in self.categories:
            return None
        client = Client.of(record, known)
        key = (client, record.qname)
        if key in self._seen or self._sent >= self.max_per_window:
            self.suppressed += 1
            return None
        self._seen.add(key)
        self._sent += 1
        return {
            "v": PAYLOAD_VERSION,
            "type": "blocked",
            "category": category[:63],
            "name": dns_presentation(record.qname, 255),
            "client": client.document(mac or (known.arp_mac if known else None)),
            "at": record.time_ms,
            "count": 1,
        }

    def new_window(self) -> None:
        """Forget the pairs already reported: the next window may report them again."""
        self._seen.clear()
        self._sent = 0
