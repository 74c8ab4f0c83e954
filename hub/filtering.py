"""Filtering for the dashboard, aggregates only: blocked attempts by category per day, by group
and by site, the names blocked most, and the log of what the signed policies block and allow.

No query here selects a device id, an address or a user: attempts are summed by day, category,
group or site, names by name and category, and policy versions are read per site and group."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.reports import Table, attempt_group_sql
from hub.store import Database

DAY_MS = 86_400_000
NO_GROUP = "(no group)"
TOP_CATEGORIES = 6  # series on the per-day chart; the rest are summed as "other"
TOP_NAMES = 20


@dataclass(frozen=True, slots=True)
class Window:
    """The last `days` whole UTC days, today included: [start_ms, end_ms)."""

    days: int
    start_ms: int
    end_ms: int

    @classmethod
    def last(cls, days: int, now_ms: int) -> Window:
        """The window of the last `days` days ending with today."""
        today = now_ms - now_ms % DAY_MS
        return cls(days, today - (days - 1) * DAY_MS, today + DAY_MS)

    def labels(self) -> list[str]:
        """Each day, YYYY-MM-DD, oldest first."""
        return [_day(self.start_ms + n * DAY_MS) for n in range(self.days)]


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def blocked_per_day(db: Database, w: Window) -> tuple[list[str], dict[str, list[int]]]:
    """The days and, per category (the TOP_CATEGORIES biggest, then "other"), the blocked
    attempts on each day."""
    rows = db.execute(
        "SELECT time_ms / 86400000, category, SUM(count) FROM attempts "
        "WHERE time_ms >= ? AND time_ms < ? GROUP BY time_ms / 86400000, category",
        (w.start_ms, w.end_ms),
    )
    labels = w.labels()
    first = w.start_ms // DAY_MS
    per: dict[str, list[int]] = {}
    for day, category, total in rows:
        if int(total) > 0:
            per.setdefault(str(category), [0] * w.days)[int(day) - first] += int(total)
    ranked = sorted(per, key=lambda c: (-sum(per[c]), c))
    series = {c: per[c] for c in ranked[:TOP_CATEGORIES]}
    if len(ranked) > TOP_CATEGORIES:
        series["other"] = [sum(per[c][n] for c in ranked[TOP_CATEGORIES:]) for n in range(w.days)]
    return labels, series


def blocked_by_group(db: Database, w: Window) -> Table:
    """Blocked attempts per group: the reporting client's group, else the device's."""
    group = attempt_group_sql(NO_GROUP)
    rows = db.execute(
        f"SELECT {group}, SUM(a.count) FROM attempts a "
        "LEFT JOIN devices d ON d.site = a.site AND d.device = a.device "
        f"WHERE a.time_ms >= ? AND a.time_ms < ? GROUP BY {group}",
        (w.start_ms, w.end_ms),
    )
    counted = sorted(((str(g), int(n)) for g, n in rows if int(n) > 0), key=lambda r: (-r[1], r[0]))
    return Table("by_group", "Blocked attempts by group", ("Group", "Attempts"), tuple(counted))


def blocked_by_site(db: Database, w: Window) -> Table:
    """Blocked attempts per site."""
    rows = db.execute(
        "SELECT site, SUM(count) FROM attempts WHERE time_ms >= ? AND time_ms < ? GROUP BY site",
        (w.start_ms, w.end_ms),
    )
    counted = sorted(((str(s), int(n)) for s, n in rows if int(n) > 0), key=lambda r: (-r[1], r[0]))
    return Table("by_site", "Blocked attempts by site", ("Site", "Attempts"), tuple(counted))


def top_names(db: Database, w: Window, limit: int = TOP_NAMES) -> Table:
    """The names blocked most often, from the summaries (an event's lookup is counted in its
    window's summary too); a counts-only device's names are stored empty and left out."""
    rows = db.execute(
        "SELECT b.name, b.category, SUM(b.count) FROM blocked b JOIN reports r "
        "ON r.id = b.report_id WHERE r.kind = 'summary' AND r.time_ms >= ? AND r.time_ms < ? "
        "AND b.name <> '' GROUP BY b.name, b.category "
        f"ORDER BY SUM(b.count) DESC, b.name, b.category LIMIT {int(limit)}",
        (w.start_ms, w.end_ms),
    )
    return Table(
        "top_names",
        "Names blocked most often",
        ("Name", "Category", "Times blocked"),
        tuple((str(r[0]), str(r[1]), int(r[2])) for r in rows),
    )


# --- What the policies block and allow, and when that changed ---


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One signed policy version that changed what is blocked or allowed."""

    at_ms: int  # when the hub signed it
    site: str
    version: int
    changes: tuple[str, ...]  # sentences: "group pupils: now blocks gambling"
    decided_by: str | None = None  # policy publish --by, or "hub.toml ... at start"; None: unknown
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """As the JSON API gives it."""
        return {
            "at_ms": self.at_ms,
            "site": self.site,
            "version": self.version,
            "changes": list(self.changes),
            "decided_by": self.decided_by,
            "reason": self.reason,
        }


def _doc(text: object) -> dict[str, Any]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _map(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _names(values: object) -> list[str]:
    return sorted(str(v) for v in values) if isinstance(values, list) else []


def _listed(words: list[str]) -> str:
    return ", ".join(words)


def _site_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """What a site policy version changed in the groups' block lists and the default group."""
    new_groups = _map(after.get("groups"))
    if before is None:
        out = [
            f"group {g}: blocks {_listed(_names(v.get('block'))) or 'nothing'}"
            for g, v in sorted(new_groups.items())
            if isinstance(v, dict)
        ]
        return [f"default group {after.get('default_group')}", *out]
    old_groups = _map(before.get("groups"))
    out = []
    if before.get("default_group") != after.get("default_group"):
        out.append(
            f"default group: {before.get('default_group')} became {after.get('default_group')}"
        )
    for name in sorted(set(old_groups) | set(new_groups)):
        old = old_groups.get(name)
        new = new_groups.get(name)
        if not isinstance(new, dict):
            out.append(f"group {name}: removed")
            continue
        if not isinstance(old, dict):
            out.append(
                f"group {name}: added, blocks {_listed(_names(new.get('block'))) or 'nothing'}"
            )
            continue
        was, now = set(_names(old.get("block"))), set(_names(new.get("block")))
        if now - was:
            out.append(f"group {name}: now blocks {_listed(sorted(now - was))}")
        if was - now:
            out.append(f"group {name}: no longer blocks {_listed(sorted(was - now))}")
    return out


def _group_filter(doc: dict[str, Any]) -> dict[str, Any]:
    """A device policy's filter settings that its group decides (allowlist and the rest), and
    the laptop filter's lists."""
    filt = _map(doc.get("filter"))
    group = _map(filt.get("group"))
    lists = filt.get("lists")
    lists = lists if isinstance(lists, list) else []
    return {
        **group,
        "lists": sorted(
            f"{e.get('category')} from {e.get('source')}" for e in lists if isinstance(e, dict)
        ),
    }


def _group_changes(group: str, before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    if before is None:
        allowed = _names(after.get("allow"))
        return [f"group {group}: allows {_listed(allowed)}"] if allowed else []
    out = []
    was, now = set(_names(before.get("allow"))), set(_names(after.get("allow")))
    if now - was:
        out.append(f"group {group}: now allows {_listed(sorted(now - was))}")
    if was - now:
        out.append(f"group {group}: no longer allows {_listed(sorted(was - now))}")
    old_lists, new_lists = set(before.get("lists", [])), set(after.get("lists", []))
    if new_lists - old_lists:
        out.append(f"laptop filter lists added: {_listed(sorted(new_lists - old_lists))}")
    if old_lists - new_lists:
        out.append(f"laptop filter lists removed: {_listed(sorted(old_lists - new_lists))}")
    for key in sorted((set(before) | set(after)) - {"allow", "lists"}):
        if before.get(key) != after.get(key):
            out.append(f"group {group}: {key} {before.get(key)} became {after.get(key)}")
    return out


def _device_policy_samples(db: Database) -> list[tuple[str, str, int, int, str]]:
    """(site, group, signed ms, version, body) of one device policy per site, group and
    signing time: a publish signs every device of a group alike, so one stands for all."""
    picks = db.execute(
        f"SELECT p.site, COALESCE(d.grp, '{NO_GROUP}'), p.created_ms, MIN(p.id) FROM policies p "
        "JOIN devices d ON d.site = p.site AND d.device = p.device WHERE p.device <> '' "
        f"GROUP BY p.site, COALESCE(d.grp, '{NO_GROUP}'), p.created_ms"
    )
    out = []
    for site, group, created_ms, policy_id in picks:
        row = db.execute("SELECT version, body FROM policies WHERE id = ?", (policy_id,))[0]
        out.append((str(site), str(group), int(created_ms), int(row[0]), str(row[1])))
    return sorted(out, key=lambda r: (r[2], r[3]))


def policy_log(db: Database) -> list[PolicyChange]:
    """Every signed policy version that changed what a group blocks or allows, newest first:
    site policies (block lists, default group) and the devices' (allowlists, the laptop
    filter's lists and settings). Versions that changed nothing of that (new hub keys or
    beacon keys, a device enrolled) are left out."""
    # One entry per site and signing time: a publish signs the site's policy and each
    # device's at the same moment, so what it changed reads as one change.
    found: dict[tuple[str, int], tuple[int, list[str]]] = {}
    previous: dict[str, dict[str, Any]] = {}
    for site, version, body, created_ms in db.execute(
        "SELECT site, version, body, created_ms FROM policies WHERE device = '' "
        "ORDER BY site, version"
    ):
        doc = _doc(body)
        changes = _site_changes(previous.get(str(site)), doc)
        previous[str(site)] = doc
        if changes:
            found[(str(site), int(created_ms))] = (int(version), changes)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for site, group, created_ms, version, body in _device_policy_samples(db):
        now = _group_filter(_doc(body))
        changes = _group_changes(group, groups.get((site, group)), now)
        groups[(site, group)] = now
        if changes:
            first, said = found.get((site, created_ms), (version, []))
            said.extend(c for c in changes if c not in said)
            found[(site, created_ms)] = (min(first, version), said)
    decided = {
        int(at): (str(by), str(reason))
        for at, by, reason in db.execute(
            "SELECT at_ms, decided_by, reason FROM policy_decisions ORDER BY id"
        )
    }
    return sorted(
        (
            PolicyChange(at, site, version, tuple(said), *decided.get(at, (None, "")))
            for (site, at), (version, said) in found.items()
        ),
        key=lambda c: (-c.at_ms, -c.version, c.site),
    )
