"""The devices as the dashboard shows them: each device's row with its state and health from
what it last reported, and a laptop's time off site per day. No pupil activity: nothing here
reads a blocked name, a user name or an address."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.model import DeviceInfo
from hub.store import Database
from hub.store.devices import get_device, get_devices

DAY_MS = 86_400_000
PAGE = 100  # devices per page
_STATES = ("on_site", "off_site", "captive", "unknown")
_LOCATIONS = {"onsite": "on_site", "offsite": "off_site", "unknown": "unknown"}
STATE_WORDS = {
    "on_site": "On site",
    "off_site": "Off site",
    "captive": "Behind a Wi-Fi sign-in page",
    "unknown": "Unknown",
}
# Laptops say where they are; a DNS filter is where it is installed.
LAPTOPS = ("pupil-laptop", "staff-laptop")


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device: its row in the devices table and what its latest reports say."""

    info: DeviceInfo
    site_state: str | None  # _STATES; None when it never said (a DNS filter, or no report)
    state_ms: int | None  # when it last said so
    heartbeat_ms: int | None  # its latest heartbeat (device clock), None if none yet
    policy_version: int  # the heartbeat's (what it applies), else the one it acknowledged
    newest_policy: int  # the newest version signed for it (0: none yet)
    software: str | None  # e.g. "hedgerow-agent 0.1.0"
    spool_depth: int | None  # reports waiting in its spool for a receipt
    problems: tuple[str, ...]  # its health problems now ("part: why"), from the heartbeat

    @property
    def health(self) -> str:
        """ok, problems or unknown (no heartbeat yet), for people and the API alike."""
        if self.heartbeat_ms is None:
            return "unknown"
        return "problems" if self.problems else "ok"

    @property
    def revoked(self) -> bool:
        """Whether the device was revoked (its reports are refused)."""
        return self.info.revoked_ms is not None

    @property
    def policy_behind(self) -> bool:
        """Whether a newer policy was signed for it than the one it applies."""
        return self.newest_policy > self.policy_version

    def to_json(self) -> dict[str, Any]:
        """The device as the JSON API gives it (no keys, no activity)."""
        i = self.info
        return {
            "site": i.site,
            "device": i.device,
            "class": i.device_class,
            "group": i.group,
            "hostname": i.hostname,
            "enrolled_ms": i.enrolled_ms,
            "revoked_ms": i.revoked_ms,
            "last_seen_ms": i.last_seen_ms,
            "site_state": self.site_state,
            "site_state_ms": self.state_ms,
            "heartbeat_ms": self.heartbeat_ms,
            "policy_version": self.policy_version,
            "newest_policy": self.newest_policy,
            "software": self.software,
            "spool_depth": self.spool_depth,
            "health": self.health,
            "problems": list(self.problems),
        }


def _body(text: object) -> dict[str, Any]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _latest_heartbeat(db: Database, site: str, device: str) -> tuple[int, dict[str, Any]] | None:
    # An index range of reports_device read backwards: the newest heartbeat is near the end.
    rows = db.execute(
        "SELECT time_ms, body FROM reports WHERE site = ? AND device = ? AND kind = 'heartbeat' "
        "ORDER BY time_ms DESC LIMIT 1",
        (site, device),
    )
    return (int(rows[0][0]), _body(rows[0][1])) if rows else None


def _latest_state_event(db: Database, site: str, device: str) -> tuple[int, str] | None:
    """The newest site_state event's (time, state): the agent sends one at each change."""
    rows = db.execute(
        "SELECT time_ms, body FROM reports WHERE site = ? AND device = ? AND kind = 'event' "
        "AND body LIKE ? ORDER BY time_ms DESC LIMIT 5",
        (site, device, '%"type":"site_state"%'),
    )
    for time_ms, text in rows:
        body = _body(text)
        detail = body.get("detail")
        state = detail.get("state") if isinstance(detail, dict) else None
        if body.get("type") == "site_state" and state in _STATES:
            at = _int(body.get("at"))
            return (at if at and at > 0 else int(time_ms), str(state))
    return None


def _newest_policies(db: Database, site: str) -> tuple[int, dict[str, int]]:
    """The newest signed version of the site policy and of each device policy of a site."""
    rows = db.execute(
        "SELECT device, MAX(version) FROM policies WHERE site = ? GROUP BY device", (site,)
    )
    by_device = {str(r[0]): int(r[1]) for r in rows}
    return by_device.pop("", 0), by_device


def _status(db: Database, info: DeviceInfo, newest: tuple[int, dict[str, int]]) -> DeviceStatus:
    heartbeat = _latest_heartbeat(db, info.site, info.device)
    beat_ms, beat = heartbeat if heartbeat else (None, {})
    state: str | None = None
    state_ms: int | None = None
    said = beat.get("site_state") or _LOCATIONS.get(str(beat.get("location")))
    if said in _STATES:
        state, state_ms = str(said), beat_ms
    if info.device_class in LAPTOPS:
        event = _latest_state_event(db, info.site, info.device)
        if event and (state_ms is None or event[0] >= state_ms):
            state_ms, state = event
    problems = [str(p) for p in beat.get("health", []) if isinstance(p, str)]
    if beat.get("filter_active") is False:
        problems.insert(0, "filter: off")
    reported = _int(beat.get("policy_version"))
    site_newest, device_newest = newest
    software = beat.get("software")
    return DeviceStatus(
        info=info,
        site_state=state,
        state_ms=state_ms,
        heartbeat_ms=beat_ms,
        policy_version=info.policy_version if reported is None else reported,
        newest_policy=max(site_newest, device_newest.get(info.device, 0)),
        software=str(software) if isinstance(software, str) else None,
        spool_depth=_int(beat.get("spool_depth")),
        problems=tuple(problems),
    )


def device_page(
    db: Database, *, site: str | None = None, after: tuple[str, str] | None = None
) -> tuple[list[DeviceStatus], tuple[str, str] | None]:
    """PAGE devices ordered by site and id, after the cursor (site, device) if given, and the
    cursor of the next page (None on the last)."""
    where: list[str] = []
    params: list[object] = []
    if site:
        where.append("site = ?")
        params.append(site)
    if after is not None:
        where.append("(site > ? OR (site = ? AND device > ?))")
        params += [after[0], after[0], after[1]]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    keys = db.execute(
        f"SELECT site, device FROM devices{clause} ORDER BY site, device LIMIT {PAGE + 1}", params
    )
    wanted = [(str(r[0]), str(r[1])) for r in keys[:PAGE]]
    infos = get_devices(db, wanted)
    newest: dict[str, tuple[int, dict[str, int]]] = {}
    out: list[DeviceStatus] = []
    for key in wanted:
        info = infos[key]
        if info.site not in newest:
            newest[info.site] = _newest_policies(db, info.site)
        out.append(_status(db, info, newest[info.site]))
    following = (out[-1].info.site, out[-1].info.device) if len(keys) > PAGE and out else None
    return out, following


def device_status(db: Database, site: str, device: str) -> DeviceStatus | None:
    """One device's row and state, or None if it was never enrolled."""
    info = get_device(db, site, device)
    return None if info is None else _status(db, info, _newest_policies(db, site))


def sites(db: Database) -> list[str]:
    """The sites that have devices, for the list's filter."""
    return [str(r[0]) for r in db.execute("SELECT DISTINCT site FROM devices ORDER BY site")]


@dataclass(frozen=True, slots=True)
class SiteDay:
    """One UTC day of a laptop's summaries: hours in each site state, and how many summaries
    said where it was."""

    day: str  # YYYY-MM-DD
    off_site_h: float
    on_site_h: float
    summaries: int


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def site_days(db: Database, site: str, device: str, now_ms: int, days: int = 30) -> list[SiteDay]:
    """The last `days` UTC days (today included, oldest first): the seconds off site and on
    site that the laptop's summaries counted (their `site.off_site_s` and `site.on_site_s`),
    as hours, each summary counted on the day its window ended."""
    today = now_ms - now_ms % DAY_MS
    start = today - (days - 1) * DAY_MS
    seconds: dict[str, list[float]] = {_day(start + n * DAY_MS): [0.0, 0.0, 0] for n in range(days)}
    rows = db.execute(
        "SELECT time_ms, body FROM reports WHERE site = ? AND device = ? AND kind = 'summary' "
        "AND time_ms >= ? AND time_ms < ?",
        (site, device, start, today + DAY_MS),
    )
    for time_ms, text in rows:
        where = _body(text).get("site")
        if not isinstance(where, dict):
            continue
        slot = seconds.get(_day(int(time_ms)))
        if slot is None:
            continue
        off, on = _int(where.get("off_site_s")), _int(where.get("on_site_s"))
        slot[0] += max(0, off or 0)
        slot[1] += max(0, on or 0)
        slot[2] += 1
    return [
        SiteDay(day, round(v[0] / 3600, 2), round(v[1] / 3600, 2), int(v[2]))
        for day, v in seconds.items()
    ]
