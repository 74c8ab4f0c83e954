"""Blocked attempts by category: read from one payload, counted once, and counted over a
sliding window.

A summary reports blocked attempts twice: per name in `blocked` (which a counts-only device
leaves empty) and per category in `categories`. They describe the same attempts, so the larger
of the two counts is taken, never their sum. An event of type "blocked" is one attempt (or
`count`). Category names are the shared vocabulary's (common/categories.py): an alias is read
as its category, and the filter's names for answers that are not blocks (SafeSearch, ECH)
never count.

Each attempt is counted once (count_once). A "blocked" event is an early notice of an attempt
that the summary of its client and span counts again: a summary is the whole count of its
client's attempts in [min(start, first_seen), max(end, last_seen)]. So an event whose `at` lies
in the span of a summary of the same device, client (behind a Pi) and category adds nothing
once both are stored: whichever of the two is stored later gives way. A later summary adds its
count less the events it covers (never below 0) and those events' rows in the attempts table
go to 0; a later event adds 0. The table then sums to the attempts made, whatever the order
of arrival, and a redelivered report is never stored twice.

Whose attempts they are, behind a Pi: the device the filter named (wording.client_identity), its
hostname, else its MAC, else its address. An address that changes hands between two devices
within a window is two devices' attempts, and a device that moves address keeps one window; a
client the filter could not name is grouped by its address, as before names were read. An
event and the summary that counts it again are matched on address and device name together:
the filter tallies them under both (agent/dns/client_window.py), and an ARP MAC that shows up
in one and not the other must not stop the match.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from common.categories import NOT_BLOCKS, canonical
from common.wire.header import Kind
from hub.model import StoredReport
from hub.rules.wording import client_identity, client_name, client_of
from hub.store import Database
from hub.store.reports import WindowScope, attempts_in_scopes, bodies_of_kind, zero_attempts

MINUTE_MS = 60_000
# A covering summary is sealed within this long after an attempt it counts: a summary spans at
# most a day (hedgerow-dns interval_s and a policy's summary_interval_s are at most 86,400 s),
# and is sealed when it closes (an hour's grace).
SUMMARY_REACH_MS = 25 * 60 * MINUTE_MS
# An event is sealed when it happens: a summary's events are looked for among those sealed in
# its span or up to this long after it.
EVENT_SEALED_MS = 60 * MINUTE_MS
BLOCKED_EVENT = "blocked"


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def blocked_attempts(payload: Mapping[str, Any]) -> dict[str, int]:
    """Blocked attempts per category (the vocabulary's names) that one summary or "blocked"
    event reports; {} for anything else."""
    if "type" in payload:
        category = payload.get("category")
        if payload.get("type") != BLOCKED_EVENT or not isinstance(category, str):
            return {}
        name = canonical(category)
        n = _count(payload.get("count", 1))
        return {name: n} if n > 0 and name not in NOT_BLOCKS else {}
    listed: dict[str, int] = {}
    entries = payload.get("blocked")
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("category"), str):
            category = canonical(entry["category"])
            listed[category] = listed.get(category, 0) + _count(entry.get("count"))
    totals = payload.get("categories")
    counted: dict[str, int] = {}
    for key, value in (totals if isinstance(totals, dict) else {}).items():
        if isinstance(key, str):
            counted[canonical(key)] = counted.get(canonical(key), 0) + _count(value)
    names = (set(listed) | set(counted)) - NOT_BLOCKS
    attempts = {name: max(listed.get(name, 0), counted.get(name, 0)) for name in names}
    return {name: n for name, n in attempts.items() if n > 0}


def attempts_of(report: StoredReport) -> dict[str, int]:
    """The attempts a stored report adds, per category: blocked_attempts() of its payload as
    ingest worked it out, less what other reports count already once count_once() has run."""
    return report.attempts if report.attempts is not None else blocked_attempts(report.payload)


def blocked_names(payload: Mapping[str, Any], category: str, limit: int = 3) -> list[str]:
    """Up to `limit` blocked names of a category (domains, never people); none from a
    counts-only device, whose names ingest has emptied."""
    if "type" in payload:
        name = payload.get("name")
        named = payload.get("category")
        same = isinstance(named, str) and canonical(named) == category
        return [name] if isinstance(name, str) and name and same else []
    entries = payload.get("blocked")
    names = [
        e["name"]
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict)
        and isinstance(e.get("category"), str)
        and canonical(e["category"]) == category
        and isinstance(e.get("name"), str)
    ]
    names = [name for name in names if name]  # counts-only devices send names emptied
    return names[:limit]


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """One report's sliding window in one category: what window_attempts answers."""

    report: StoredReport
    category: str
    minutes: int


def _scope_key(query: WindowQuery) -> tuple[str, str, str, str | None]:
    """(site, device, category, whose attempts: client_identity, or None for a laptop)."""
    return (
        query.report.site,
        query.report.device,
        query.category.replace("\x00", ""),
        client_identity(client_of(query.report)),
    )


def window_attempts_many(
    db: Database, queries: Sequence[WindowQuery]
) -> list[tuple[int, list[int]]]:
    """Attempts in a category by each report's device (and DNS client) in the `minutes` up to
    the report, judged by device time so spooled reports count where they happened; and the
    report ids (this report first, then oldest first).

    Reads the attempts table that ingest fills with each report, the database being the truth
    shared by every hub process and surviving restarts: the windows of one device and category
    are merged into one index range, read in one statement with those of up to 99 others, and
    cut per report here, so a batch costs a statement per 100 devices, not one per report."""
    spans: dict[tuple[str, str, str, str | None], tuple[int, int]] = {}
    for q in queries:
        key = _scope_key(q)
        since, until = q.report.time_ms - q.minutes * MINUTE_MS, q.report.time_ms
        low, high = spans.get(key, (since, until))
        spans[key] = (min(low, since), max(high, until))
    scopes = {
        (site, device, category, who): WindowScope(
            site, device, category, None, low, high, client_key=who
        )
        for (site, device, category, who), (low, high) in spans.items()
    }
    rows = attempts_in_scopes(db, list(scopes.values()))
    times = {scope: [r[0] for r in found] for scope, found in rows.items()}
    results = []
    for q in queries:
        scope = scopes[_scope_key(q)]
        found, at = rows[scope], times[scope]
        # The report's own row is what it says (a summary's whole count: the events it covers
        # are 0 in the table now), even when it adds less than that.
        total = blocked_attempts(q.report.payload).get(q.category, 0)
        ids = [q.report.id] if total else []
        lo = bisect_right(at, q.report.time_ms - q.minutes * MINUTE_MS)
        hi = bisect_right(at, q.report.time_ms)
        for _, row_id, n in found[lo:hi]:
            if row_id != q.report.id and n > 0:
                total += n
                ids.append(row_id)
        results.append((total, ids))
    return results


# --- counting each attempt once --------------------------------------------------------------

# (site, device, and of a DNS client behind a Pi its address and device name ("" for none);
# None, None for a laptop)
Scope = tuple[str, str, str | None, str | None]


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def summary_span(payload: Mapping[str, Any]) -> tuple[int, int] | None:
    """The span a summary counts: [min(start, first_seen), max(end, last_seen)] (a query
    answered as a window closed can fall just outside `start`..`end`); None if unreadable."""
    times = [_int(payload.get(k)) for k in ("start", "first_seen", "end", "last_seen")]
    if any(t is None for t in times):
        return None
    start, first, end, last = (int(t) for t in times if t is not None)
    return min(start, first), max(end, last)


def event_at(payload: Mapping[str, Any]) -> int | None:
    """When a "blocked" event's attempt happened; None for any other payload."""
    return _int(payload.get("at")) if payload.get("type") == BLOCKED_EVENT else None


def _scope(report: StoredReport) -> Scope | None:
    """Whose attempts a report counts: a laptop's own, or one DNS client's behind a Pi (None
    when a Pi's report names no client: nothing can be matched to it)."""
    if report.device_class != "sinkhole":
        return (report.site, report.device, None, None)
    client = client_of(report)
    ip = client.get("ip") if client is not None else None
    if not isinstance(ip, str) or not ip:
        return None
    return (report.site, report.device, ip.replace("\x00", ""), client_name(client) or "")


@dataclass(frozen=True, slots=True)
class _Counted:
    """One report of a batch that counts attempts: a summary (span) or an event (at)."""

    report: StoredReport
    scope: Scope
    attempts: dict[str, int]
    span: tuple[int, int] | None = None  # a summary's
    at: int | None = None  # an event's

    def looks_at(self, category: str) -> WindowScope:
        """Where the reports that may count this one's attempts have their rows."""
        site, device, ip, name = self.scope
        if self.span is not None:  # events sealed from the span's start
            since, until = self.span[0] - 1, self.span[1] + EVENT_SEALED_MS
        else:  # summaries sealed from the attempt on
            assert self.at is not None
            since, until = self.at - 1, self.at + SUMMARY_REACH_MS
        category = category.replace("\x00", "")
        return WindowScope(site, device, category, ip, since, until, client_name=name)


def _counted(report: StoredReport) -> _Counted | None:
    attempts = attempts_of(report)
    scope = _scope(report)
    if not attempts or scope is None:
        return None
    if report.kind == Kind.SUMMARY:
        span = summary_span(report.payload)
        return _Counted(report, scope, attempts, span=span) if span is not None else None
    at = event_at(report.payload) if report.kind == Kind.EVENT else None
    return _Counted(report, scope, attempts, at=at) if at is not None else None


def _spans(bodies: Mapping[int, str]) -> dict[int, tuple[int, int]]:
    spans = {}
    for report_id, body in bodies.items():
        span = summary_span(_document(body))
        if span is not None:
            spans[report_id] = span
    return spans


def _times(bodies: Mapping[int, str]) -> dict[int, int]:
    times = {}
    for report_id, body in bodies.items():
        at = event_at(_document(body))
        if at is not None:
            times[report_id] = at
    return times


def _document(body: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def count_once(db: Database, reports: Sequence[StoredReport]) -> list[StoredReport]:
    """The batch's reports, each with the attempts it adds (attempts_of) once the events and
    summaries that count the same attempts are matched (the module's docstring says how); the
    attempts table is updated to match. Run after the batch is inserted, before the rules: the
    reports of the batch are stored, and arrival order is report id order."""
    counted = [c for c in (_counted(r) for r in reports) if c is not None]
    if not counted:
        return list(reports)
    looks = {(c.report.id, k): c.looks_at(k) for c in counted for k in c.attempts}
    rows = attempts_in_scopes(db, list(dict.fromkeys(looks.values())))
    summaries_wanted: set[int] = set()  # earlier rows that may be summaries covering an event
    events_wanted: set[int] = set()  # earlier rows that may be events a summary covers
    for c in counted:
        for category in c.attempts:
            found = rows[looks[(c.report.id, category)]]
            earlier = {row_id for _, row_id, _ in found if row_id < c.report.id}
            (events_wanted if c.span is not None else summaries_wanted).update(earlier)
    spans = _spans(bodies_of_kind(db, summaries_wanted, "summary"))
    times = _times(bodies_of_kind(db, events_wanted, "event"))
    # What each stored row counts now: rows read, changed as the batch is matched in order.
    live = {(row_id, scope.category): n for scope, found in rows.items() for _, row_id, n in found}
    zeroed: list[tuple[int, str]] = []
    adds: dict[int, dict[str, int]] = {}
    for c in sorted(counted, key=lambda c: c.report.id):
        report_id = c.report.id
        added: dict[str, int] = {}
        for category, n in c.attempts.items():
            found = rows[looks[(report_id, category)]]
            before = sorted({row_id for _, row_id, _ in found if row_id < report_id})
            if c.span is not None:  # a summary: the earlier events it covers give way
                lo, hi = c.span
                covered = [
                    e for e in before if e in times and lo <= times[e] <= hi and live[(e, category)]
                ]
                for e in covered:
                    n -= live[(e, category)]
                    live[(e, category)] = 0
                    zeroed.append((e, category))
                added[category] = max(0, n)
            else:  # an event: an earlier summary covering it counts it already
                assert c.at is not None
                at = c.at
                if any(s in spans and spans[s][0] <= at <= spans[s][1] for s in before):
                    live[(report_id, category)] = 0
                    zeroed.append((report_id, category))
                    added[category] = 0
                else:
                    added[category] = n
        adds[report_id] = {category: n for category, n in added.items() if n > 0}
    zero_attempts(db, zeroed)
    return [replace(r, attempts=adds[r.id]) if r.id in adds else r for r in reports]
