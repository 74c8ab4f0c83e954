"""The events the agent sends besides its summaries, and the limits that keep a pupil from
flooding the spool with them: blocked lookups of grave categories, bypass findings, health
problems as they start and end, and anything else the service sends at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agent.filter.querylog import QueryRecord
from agent.report import Publisher
from common.wire.header import Kind

BLOCKED_REPEAT_S = 600.0  # a blocked name's urgent event at most this often
BLOCKED_PER_HOUR = 60  # urgent blocked events an hour at most (the summary counts the rest)
# Health problem names (status, heartbeat) -> the kinds the hub's health rule knows.
HEALTH_KINDS = {
    "sniffer": "sniffer_unavailable",
    "netlink": "netlink_unavailable",
    "filter": "filter_failed",
    "resolver": "resolver_unmanaged",
    "policy": "policy_refused",
}
METHOD_CATEGORY = {"dot": "dot", "doq": "dot", "doh": "doh", "tunnel": "vpn", "flagged_app": "vpn"}


class Events:
    """Builds and offers events (sealed and spooled by the publisher)."""

    def __init__(
        self,
        publisher: Callable[[], Publisher | None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._clock = clock
        self._monotonic = monotonic
        self.last_publish_ms: int | None = None
        self._blocked_sent: dict[str, float] = {}  # name -> when its event was sent
        self._blocked_hour = (monotonic(), 0)  # (hour began, events sent in it)
        self._told: dict[str, str] = {}  # health problems told to the hub
        self._seen_before: set[str] = set()

    def send(self, kind: str, detail: dict[str, Any], *, urgent: bool, **fields: Any) -> None:
        """Offer one event; the time it was offered counts as the last publish."""
        publisher = self._publisher()
        if publisher is None:
            return
        event = {"v": 1, "type": kind, "at": int(self._clock() * 1000), "detail": detail, **fields}
        if publisher.offer(Kind.EVENT, event, urgent=urgent):
            self.last_publish_ms = event["at"]

    def offered(self, at_ms: int) -> None:
        """Something else (a summary) was offered at this time."""
        self.last_publish_ms = at_ms

    def blocked(
        self, record: QueryRecord, *, client: dict[str, Any], location: str, counts_only: bool
    ) -> None:
        """A blocked lookup in a grave category, at once (the summary counts it too). Once per
        name per BLOCKED_REPEAT_S and at most BLOCKED_PER_HOUR an hour, so hammering a name
        cannot flood the spool; a counts-only device never names what it looked up."""
        now = self._monotonic()
        if now - self._blocked_hour[0] >= 3600:
            self._blocked_hour = (now, 0)
        last = self._blocked_sent.get(record.qname)
        if last is not None and now - last < BLOCKED_REPEAT_S:
            return
        if self._blocked_hour[1] >= BLOCKED_PER_HOUR:
            return
        if len(self._blocked_sent) > 4096:
            self._blocked_sent.clear()
        self._blocked_sent[record.qname] = now
        self._blocked_hour = (self._blocked_hour[0], self._blocked_hour[1] + 1)
        fields: dict[str, Any] = {"category": record.category or "uncategorised", "count": 1}
        if not counts_only:
            fields["name"] = record.qname
        self.send("blocked", {"location": location}, urgent=True, client=client, **fields)

    def bypass(self, finding: Any) -> None:
        """A bypass finding (activity sampler or sniffer): its fields flat in `detail`."""
        raw = finding.to_json()
        extra = raw.pop("detail", None) or {}
        merged = {**extra, **raw}  # e.g. the tunnel's interface name
        detail = {
            str(k): (v[:1024] if isinstance(v, str) else v)
            for k, v in merged.items()
            if isinstance(v, str | int | bool) and v != ""
        }
        category = METHOD_CATEGORY.get(finding.method, "bypass")
        self.send("bypass", dict(list(detail.items())[:64]), urgent=True, category=category)

    def health(self, problems: dict[str, str]) -> None:
        """A `health` event when a part stops working (`<kind>`) and when it works again
        (`<kind>_recovered`); told only once a problem has lasted two looks (a sniffer child
        still starting is no problem)."""
        seen = {HEALTH_KINDS.get(k, k): v for k, v in problems.items()}
        now = {k: v for k, v in seen.items() if k in self._seen_before or k in self._told}
        self._seen_before = set(seen)
        for kind in now.keys() - self._told.keys():
            self.send("health", {"problem": kind, "error": now[kind][:1024]}, urgent=False)
        for kind in self._told.keys() - now.keys():
            self.send("health", {"problem": f"{kind}_recovered"}, urgent=False)
        self._told = now
