"""The concern record (the safeguarding policy's "concerns form"): opened from alerts or by hand,
then only ever added to. An amendment is a new entry that supersedes the fields it names, with
who, when and why; a sign-off is an entry too. Nothing here updates or deletes a row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hub.errors import HubError
from hub.model import Alert
from hub.store import Database

# The fields of the form, in the order it shows them, with their labels.
FIELDS: dict[str, str] = {
    "pupil": "Pupil reference",
    "category": "Category",
    "happened": "When it happened (UTC)",
    "device": "Device (site/device)",
    "seen": "What was seen",
    "actions": "Actions taken",
    "decision": "Decision",
    "reasons": "Reasons for the decision",
    "parents_informed": "Parents informed",
    "parents_informed_at": "When parents were informed (UTC)",
    "outcome": "Outcome",
}
REQUIRED = ("pupil", "category", "seen")
CATEGORIES = (
    "online safety",
    "self-harm or suicide",
    "sexual content or exploitation",
    "abuse or neglect",
    "bullying or harassment",
    "radicalisation or extremism",
    "grooming",
    "mental health",
    "other",
)
PARENTS = ("", "yes", "no")  # "": not decided yet
# YYYY-MM-DDTHH:MM in UTC, as an <input type=datetime-local> sends it.
TIMES = ("happened", "parents_informed_at")
SHORT = {"pupil": 64, "category": 64, "device": 200, "parents_informed": 3}
LONG = 20_000
STATUSES = ("open", "signed off", "all")
OPENED, AMENDED, SIGNED_OFF = "opened", "amended", "signed-off"
LIST_LIMIT = 500
MAX_ID = 2**63 - 1  # a larger number in a URL is no concern (not a database error)


class ConcernError(HubError):
    """A concern cannot be recorded as asked (the message says which field and why)."""


class ConcernMissing(ConcernError):
    """There is no such concern."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a concern: who added it, when, why, and the fields it set."""

    id: int
    at_ms: int
    actor: str
    role: str
    kind: str  # opened, amended, signed-off
    reason: str | None  # an amendment's reason, a sign-off's note
    fields: tuple[tuple[str, str], ...]  # (field, value) in FIELDS order


@dataclass(frozen=True, slots=True)
class LinkedAlert:
    """An alert the concern was opened from, as it was then."""

    alert_id: int
    rule: str
    severity: int
    site: str
    device: str
    group: str | None
    summary: str
    first_seen_ms: int


@dataclass(frozen=True, slots=True)
class Concern:
    """A concern record: its entries in order and the alerts it was opened from."""

    id: int
    opened_ms: int  # when it was recorded
    opened_by: str
    group: str | None
    entries: tuple[Entry, ...]
    alerts: tuple[LinkedAlert, ...]

    @property
    def current(self) -> dict[str, str]:
        """Each field's value now: the latest entry that set it wins."""
        values = dict.fromkeys(FIELDS, "")
        for entry in self.entries:
            values.update(entry.fields)
        return values

    @property
    def status(self) -> str:
        """Signed off when the latest entry is a sign-off; an amendment opens it again."""
        return "signed off" if self.entries and self.entries[-1].kind == SIGNED_OFF else "open"

    def to_json(self) -> dict[str, object]:
        """The concern for the JSON API and the export (times in ms since the epoch, UTC)."""
        return {
            "id": self.id,
            "recorded_ms": self.opened_ms,
            "opened_by": self.opened_by,
            "group": self.group,
            "status": self.status,
            "current": self.current,
            "entries": [
                {
                    "id": e.id,
                    "at_ms": e.at_ms,
                    "actor": e.actor,
                    "role": e.role,
                    "kind": e.kind,
                    "reason": e.reason,
                    "fields": dict(e.fields),
                }
                for e in self.entries
            ],
            "alerts": [
                {
                    "id": a.alert_id,
                    "rule": a.rule,
                    "severity": a.severity,
                    "site": a.site,
                    "device": a.device,
                    "group": a.group,
                    "summary": a.summary,
                    "first_seen_ms": a.first_seen_ms,
                }
                for a in self.alerts
            ],
        }


def time_ms(text: str) -> int | None:
    """A form's YYYY-MM-DDTHH:MM (UTC) as ms since the epoch, or None when empty."""
    if not text:
        return None
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp() * 1000)


def clean(values: Mapping[str, str]) -> dict[str, str]:
    """The form's values checked and trimmed; ConcernError names the first field at fault."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConcernError(f"unknown field {unknown[0]!r}")
    cleaned: dict[str, str] = {}
    for field, raw in values.items():
        value = raw.strip().replace("\r\n", "\n")
        label = FIELDS[field]
        if len(value) > SHORT.get(field, LONG):
            raise ConcernError(f"{label}: at most {SHORT.get(field, LONG)} characters")
        if field == "category" and value and value not in CATEGORIES:
            raise ConcernError(f"{label}: choose one of the list")
        if field == "parents_informed" and value not in PARENTS:
            raise ConcernError(f"{label}: yes, no or not yet")
        if field in TIMES and value:
            try:
                time_ms(value)
            except ValueError:
                raise ConcernError(f"{label}: a date and time like 2026-03-01T14:30") from None
        if field == "device" and value and value.count("/") != 1:
            raise ConcernError(f"{label}: site/device, e.g. school/lt-042")
        cleaned[field] = value
    return cleaned


def _add_entry(
    db: Database,
    concern_id: int,
    *,
    at_ms: int,
    actor: str,
    role: str,
    kind: str,
    reason: str | None,
    fields: Mapping[str, str],
) -> int:
    entry_id = db.insert(
        "INSERT INTO concern_entries (concern_id, at_ms, actor, role, kind, reason) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (concern_id, at_ms, actor, role, kind, reason),
    )
    db.executemany(
        "INSERT INTO concern_fields (entry_id, concern_id, field, value) VALUES (?, ?, ?, ?)",
        [(entry_id, concern_id, f, fields[f]) for f in FIELDS if f in fields],
    )
    return entry_id


def open_concern(
    db: Database,
    *,
    at_ms: int,
    actor: str,
    role: str,
    group: str | None,
    values: Mapping[str, str],
    alerts: Sequence[Alert] = (),
) -> int:
    """Record a new concern (in the caller's transaction) and return its id. Empty fields are
    not stored; pupil, category and what was seen are required."""
    fields = {k: v for k, v in clean(values).items() if v}
    for field in REQUIRED:
        if field not in fields:
            raise ConcernError(f"{FIELDS[field]}: required")
    concern_id = db.insert(
        "INSERT INTO concerns (opened_ms, opened_by, grp) VALUES (?, ?, ?)",
        (at_ms, actor, group or None),
    )
    _add_entry(
        db, concern_id, at_ms=at_ms, actor=actor, role=role, kind=OPENED, reason=None, fields=fields
    )
    unique = {a.id: a for a in alerts}
    db.executemany(
        "INSERT INTO concern_alerts (concern_id, alert_id, rule, severity, site, device, grp, "
        "summary, first_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                concern_id,
                a.id,
                a.rule,
                a.severity,
                a.site,
                a.device,
                a.group,
                a.summary,
                a.first_seen_ms,
            )
            for a in unique.values()
        ],
    )
    return concern_id


def amend(
    db: Database,
    concern_id: int,
    *,
    at_ms: int,
    actor: str,
    role: str,
    values: Mapping[str, str],
    reason: str,
) -> int:
    """Add an amendment: a new entry with the fields whose value changes and why. Returns the
    entry's id; ConcernError if nothing changes, a reason is missing or a required field is
    emptied."""
    concern = get_concern(db, concern_id)
    why = reason.strip()
    if not why:
        raise ConcernError("Reason for the amendment: required")
    if len(why) > LONG:
        raise ConcernError(f"Reason for the amendment: at most {LONG} characters")
    current = concern.current
    changes = {k: v for k, v in clean(values).items() if v != current[k]}
    for field in REQUIRED:
        if field in changes and not changes[field]:
            raise ConcernError(f"{FIELDS[field]}: required")
    if not changes:
        raise ConcernError("The amendment changes no field")
    return _add_entry(
        db,
        concern_id,
        at_ms=at_ms,
        actor=actor,
        role=role,
        kind=AMENDED,
        reason=why,
        fields=changes,
    )


def sign_off(db: Database, concern_id: int, *, at_ms: int, actor: str, role: str, note: str) -> int:
    """Sign the concern off as it stands now; ConcernError if it already is."""
    concern = get_concern(db, concern_id)
    if concern.status == "signed off":
        raise ConcernError("The concern is already signed off; amend it to change it")
    if len(note) > LONG:
        raise ConcernError(f"Sign-off note: at most {LONG} characters")
    return _add_entry(
        db,
        concern_id,
        at_ms=at_ms,
        actor=actor,
        role=role,
        kind=SIGNED_OFF,
        reason=note.strip() or None,
        fields={},
    )


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def load(db: Database, ids: Sequence[int]) -> list[Concern]:
    """The concerns with these ids, in the order given (missing ones left out)."""
    if not ids:
        return []
    ids = list(ids)
    marks = _marks(ids)
    heads = {
        int(r[0]): r
        for r in db.execute(
            f"SELECT id, opened_ms, opened_by, grp FROM concerns WHERE id IN ({marks})", ids
        )
    }
    values: dict[int, list[tuple[str, str]]] = {}
    for entry_id, field, value in db.execute(
        f"SELECT entry_id, field, value FROM concern_fields WHERE concern_id IN ({marks})", ids
    ):
        values.setdefault(int(entry_id), []).append((field, value))
    order = list(FIELDS)
    entries: dict[int, list[Entry]] = {}
    for r in db.execute(
        "SELECT id, concern_id, at_ms, actor, role, kind, reason FROM concern_entries "
        f"WHERE concern_id IN ({marks}) ORDER BY id",
        ids,
    ):
        fields = tuple(sorted(values.get(int(r[0]), []), key=lambda fv: order.index(fv[0])))
        entries.setdefault(int(r[1]), []).append(
            Entry(int(r[0]), int(r[2]), r[3], r[4], r[5], r[6], fields)
        )
    linked: dict[int, list[LinkedAlert]] = {}
    for r in db.execute(
        "SELECT concern_id, alert_id, rule, severity, site, device, grp, summary, first_seen_ms "
        f"FROM concern_alerts WHERE concern_id IN ({marks}) ORDER BY first_seen_ms, alert_id",
        ids,
    ):
        linked.setdefault(int(r[0]), []).append(
            LinkedAlert(int(r[1]), r[2], int(r[3]), r[4], r[5], r[6], r[7], int(r[8]))
        )
    return [
        Concern(
            i,
            int(heads[i][1]),
            heads[i][2],
            heads[i][3],
            tuple(entries.get(i, [])),
            tuple(linked.get(i, [])),
        )
        for i in ids
        if i in heads
    ]


def get_concern(db: Database, concern_id: int) -> Concern:
    """One concern; ConcernMissing if there is none."""
    found = load(db, [concern_id]) if 0 < concern_id <= MAX_ID else []
    if not found:
        raise ConcernMissing(f"there is no concern {concern_id}")
    return found[0]


def _group_clause(groups: frozenset[str] | None, column: str) -> tuple[str, list[object]]:
    """SQL limiting rows to `groups` (None: no limit; a row without a group is nobody's)."""
    if groups is None:
        return "1 = 1", []
    if not groups:
        return "1 = 0", []
    chosen = sorted(groups)
    return f"{column} IN ({_marks(chosen)})", list(chosen)


def _current_is(field: str) -> str:
    """SQL: concern ids whose current `field` equals a parameter (case-insensitive)."""
    return (
        "SELECT f.concern_id FROM concern_fields f WHERE f.field = '" + field + "' "
        "AND LOWER(f.value) = LOWER(?) AND f.entry_id = (SELECT MAX(g.entry_id) "
        "FROM concern_fields g WHERE g.concern_id = f.concern_id AND g.field = f.field)"
    )


def list_concerns(
    db: Database, *, groups: frozenset[str] | None, status: str = "open", pupil: str = ""
) -> list[Concern]:
    """Concerns newest first (at most LIST_LIMIT), limited to `groups` unless None, filtered by
    status and by the pupil reference they carry now."""
    if status not in STATUSES:
        raise ConcernError(f"status must be one of {', '.join(STATUSES)}")
    where, params = _group_clause(groups, "grp")
    sql = f"SELECT id FROM concerns WHERE {where}"
    if pupil.strip():
        sql += f" AND id IN ({_current_is('pupil')})"
        params.append(pupil.strip())
    rows = db.execute(sql + " ORDER BY id DESC", params)
    found = load(db, [int(r[0]) for r in rows])
    return [c for c in found if status == "all" or c.status == status][:LIST_LIMIT]


@dataclass(frozen=True, slots=True)
class ChronologyItem:
    """One line of a chronology: a concern's entry or an alert, at the time it belongs to."""

    at_ms: int
    kind: str  # "alert", or an entry's kind
    concern: Concern | None
    entry: Entry | None
    alert: LinkedAlert | None


def _concern_items(concerns: Iterable[Concern]) -> list[ChronologyItem]:
    items: list[ChronologyItem] = []
    for c in concerns:
        for e in c.entries:
            at = e.at_ms
            if e.kind == OPENED:  # the concern sits where it happened, when that is known
                at = time_ms(dict(e.fields).get("happened", "")) or e.at_ms
            items.append(ChronologyItem(at, e.kind, c, e, None))
    return items


def _sees(groups: frozenset[str] | None, group: str | None) -> bool:
    return groups is None or (group is not None and group in groups)


def _sorted(items: list[ChronologyItem]) -> list[ChronologyItem]:
    return sorted(items, key=lambda i: (i.at_ms, i.entry.id if i.entry else 0))


def pupil_chronology(
    db: Database, pupil: str, *, groups: frozenset[str] | None
) -> list[ChronologyItem]:
    """A pupil's concerns (every entry) and the alerts they were opened from, in time order."""
    where, params = _group_clause(groups, "grp")
    rows = db.execute(
        f"SELECT id FROM concerns WHERE {where} AND id IN ({_current_is('pupil')})",
        [*params, pupil.strip()],
    )
    concerns = load(db, [int(r[0]) for r in rows])
    items = _concern_items(concerns)
    alerts = {a.alert_id: a for c in concerns for a in c.alerts if _sees(groups, a.group)}
    items += [ChronologyItem(a.first_seen_ms, "alert", None, None, a) for a in alerts.values()]
    return _sorted(items)


def device_chronology(
    db: Database, site: str, device: str, *, groups: frozenset[str] | None
) -> list[ChronologyItem]:
    """A device's alerts (those still kept, and those copied into concerns) and the concerns
    opened from them or naming the device, in time order."""
    where, params = _group_clause(groups, "grp")
    rows = db.execute(
        f"SELECT id FROM concerns WHERE {where} AND (id IN (SELECT concern_id FROM "
        f"concern_alerts WHERE site = ? AND device = ?) OR id IN ({_current_is('device')}))",
        [*params, site, device, f"{site}/{device}"],
    )
    concerns = load(db, [int(r[0]) for r in rows])
    items = _concern_items(concerns)
    alerts: dict[int, LinkedAlert] = {
        a.alert_id: a
        for c in concerns
        for a in c.alerts
        if (a.site, a.device) == (site, device) and _sees(groups, a.group)
    }
    where, params = _group_clause(groups, "grp")
    for r in db.execute(
        "SELECT id, rule, severity, site, device, grp, summary, first_seen_ms FROM alerts "
        f"WHERE site = ? AND device = ? AND {where} ORDER BY first_seen_ms LIMIT 1000",
        [site, device, *params],
    ):
        alerts[int(r[0])] = LinkedAlert(
            int(r[0]), r[1], int(r[2]), r[3], r[4], r[5], r[6], int(r[7])
        )
    items += [ChronologyItem(a.first_seen_ms, "alert", None, None, a) for a in alerts.values()]
    return _sorted(items)
