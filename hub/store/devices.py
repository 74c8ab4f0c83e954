"""The devices table: enrol, look up, list and revoke devices.

`add_device` is how every part of the hub registers a device (enrolment, tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hub.errors import StoreError
from hub.model import DeviceInfo
from hub.store.database import Database, Row

_COLUMNS = (
    "site, device, class, grp, verify_key, enrolled_ms, revoked_ms, last_seen_ms, hostname, "
    "counts_only, beacon_key, policy_version"
)


def _info(row: Row) -> DeviceInfo:
    return DeviceInfo(
        site=row[0],
        device=row[1],
        device_class=row[2],
        group=row[3],
        verify_key=bytes(row[4]),
        enrolled_ms=int(row[5]),
        revoked_ms=None if row[6] is None else int(row[6]),
        last_seen_ms=None if row[7] is None else int(row[7]),
        hostname=row[8],
        counts_only=bool(row[9]),
        beacon_key=None if row[10] is None else bytes(row[10]),
        policy_version=int(row[11]),
    )


def add_device(
    db: Database,
    info: DeviceInfo,
    *,
    mqtt_user: str | None = None,
    mqtt_secret_hash: str | None = None,
) -> None:
    """Insert a new device row. Raises StoreError if (site, device) is already enrolled."""
    if get_device(db, info.site, info.device) is not None:
        raise StoreError(f"device {info.site}/{info.device} is already enrolled")
    db.execute(
        f"INSERT INTO devices ({_COLUMNS}, mqtt_user, mqtt_secret_hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            info.site,
            info.device,
            info.device_class,
            info.group,
            info.verify_key,
            info.enrolled_ms,
            info.revoked_ms,
            info.last_seen_ms,
            info.hostname,
            1 if info.counts_only else 0,
            info.beacon_key,
            info.policy_version,
            mqtt_user,
            mqtt_secret_hash,
        ),
    )


def get_device(db: Database, site: str, device: str) -> DeviceInfo | None:
    """One device, or None if it was never enrolled."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM devices WHERE site = ? AND device = ?", (site, device)
    )
    return _info(rows[0]) if rows else None


DEVICES_PER_STATEMENT = 400


def devices_where(keys: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """For reading many devices' rows: (SQL condition on site and device columns, its
    parameters) per DEVICES_PER_STATEMENT devices, e.g. "(site = ? AND device IN (?, ?))"."""
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), DEVICES_PER_STATEMENT):
        by_site: dict[str, list[str]] = {}
        for site, device in wanted[start : start + DEVICES_PER_STATEMENT]:
            by_site.setdefault(site, []).append(device)
        where = " OR ".join(
            f"(site = ? AND device IN ({', '.join('?' * len(devices))}))"
            for devices in by_site.values()
        )
        yield f"({where})", [p for site, devices in by_site.items() for p in (site, *devices)]


def get_devices(db: Database, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DeviceInfo]:
    """Several devices in one query per 400 of them (ingest loads a batch's devices at once);
    ids that were never enrolled are absent."""
    found: dict[tuple[str, str], DeviceInfo] = {}
    for where, params in devices_where(keys):
        for row in db.execute(f"SELECT {_COLUMNS} FROM devices WHERE {where}", params):
            info = _info(row)
            found[(info.site, info.device)] = info
    return found


def list_devices(db: Database, site: str | None = None) -> list[DeviceInfo]:
    """Every device (of one site, or of all), ordered by site and id."""
    if site is None:
        rows = db.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY site, device")
    else:
        rows = db.execute(f"SELECT {_COLUMNS} FROM devices WHERE site = ? ORDER BY device", (site,))
    return [_info(row) for row in rows]


def last_seqs(db: Database, site: str | None = None) -> dict[tuple[str, str], int]:
    """The highest stored seq of each device (the devices.last_seq column)."""
    sql = "SELECT site, device, last_seq FROM devices"
    rows = db.execute(sql + " WHERE site = ?", (site,)) if site else db.execute(sql)
    return {(r[0], r[1]): int(r[2]) for r in rows}


def revoke_device(db: Database, site: str, device: str, now_ms: int) -> bool:
    """Mark a device revoked; True if it was enrolled and not yet revoked."""
    found = get_device(db, site, device)
    if found is None:
        raise StoreError(f"no device {site}/{device}")
    if found.revoked_ms is not None:
        return False
    db.execute(
        "UPDATE devices SET revoked_ms = ? WHERE site = ? AND device = ?", (now_ms, site, device)
    )
    return True


def record_seen(db: Database, seen: Iterable[tuple[str, str, int, int]]) -> None:
    """Update last_seen_ms and last_seq for (site, device, seen_ms, seq), one row per device;
    neither goes down (two hub processes may commit batches out of order)."""
    rows = [(seen_ms, seen_ms, seq, seq, site, device) for site, device, seen_ms, seq in seen]
    if rows and db.dialect == "postgresql":  # one statement, not one per device
        db.execute(
            "UPDATE devices AS d SET last_seen_ms = CASE WHEN d.last_seen_ms IS NULL "
            "OR d.last_seen_ms < s.seen_ms THEN s.seen_ms ELSE d.last_seen_ms END, "
            "last_seq = CASE WHEN d.last_seq < s.seq THEN s.seq ELSE d.last_seq END "
            "FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bigint[]) "
            "AS s(site, device, seen_ms, seq) WHERE d.site = s.site AND d.device = s.device",
            [
                [r[4] for r in rows],
                [r[5] for r in rows],
                [r[0] for r in rows],
                [r[2] for r in rows],
            ],
            binary=True,
        )
    elif rows:
        db.executemany(
            "UPDATE devices SET last_seen_ms = "
            "CASE WHEN last_seen_ms IS NULL OR last_seen_ms < ? THEN ? ELSE last_seen_ms END, "
            "last_seq = CASE WHEN last_seq < ? THEN ? ELSE last_seq END "
            "WHERE site = ? AND device = ?",
            rows,
        )
