"""Subject access (UK GDPR art. 15): everything the hub holds about one device or one user.

A device's export is its row, every report it sent (decrypted body), the blocked rows, the
alerts raised about it with their actions, and the rejections recorded under its id. A user's
export is every report naming that user (client.user), their blocked rows, and the alerts whose
evidence includes those reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hub.errors import StoreError
from hub.model import DeviceInfo
from hub.store.database import Database, Row
from hub.store.devices import get_device

_REPORTS = (
    "SELECT id, site, device, seq, kind, time_ms, received_ms, client_ip, client_user, body "
    "FROM reports"
)
_ALERTS = (
    "SELECT id, rule, severity, site, device, device_class, grp, status, first_seen_ms, "
    "last_seen_ms, count, summary, evidence FROM alerts"
)


def device_json(info: DeviceInfo) -> dict[str, Any]:
    """A device row as JSON (keys as hex)."""
    return {
        "site": info.site,
        "device": info.device,
        "class": info.device_class,
        "group": info.group,
        "hostname": info.hostname,
        "counts_only": info.counts_only,
        "enrolled_ms": info.enrolled_ms,
        "revoked_ms": info.revoked_ms,
        "last_seen_ms": info.last_seen_ms,
        "policy_version": info.policy_version,
        "verify_key": info.verify_key.hex(),
        "beacon_key": info.beacon_key.hex() if info.beacon_key else None,
    }


def _reports(db: Database, rows: Sequence[Row]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in rows:
        blocked = db.execute(
            "SELECT name, category, count FROM blocked WHERE report_id = ?", (r[0],)
        )
        out.append(
            {
                "id": int(r[0]),
                "site": r[1],
                "device": r[2],
                "seq": int(r[3]),
                "kind": r[4],
                "time_ms": int(r[5]),
                "received_ms": int(r[6]),
                "client_ip": r[7],
                "client_user": r[8],
                "body": json.loads(r[9]),
                "blocked": [{"name": b[0], "category": b[1], "count": int(b[2])} for b in blocked],
            }
        )
    return out


def _alert(db: Database, r: Row) -> dict[str, Any]:
    actions = db.execute(
        "SELECT at_ms, actor, action, note FROM alert_actions WHERE alert_id = ? ORDER BY id",
        (r[0],),
    )
    return {
        "id": int(r[0]),
        "rule": r[1],
        "severity": int(r[2]),
        "site": r[3],
        "device": r[4],
        "device_class": r[5],
        "group": r[6],
        "status": r[7],
        "first_seen_ms": int(r[8]),
        "last_seen_ms": int(r[9]),
        "count": int(r[10]),
        "summary": r[11],
        "evidence": json.loads(r[12]),
        "actions": [
            {"at_ms": int(a[0]), "actor": a[1], "action": a[2], "note": a[3]} for a in actions
        ],
    }


def export_device(db: Database, site: str, device: str) -> dict[str, Any]:
    """Everything held about one device. Raises StoreError if the hub never knew it."""
    info = get_device(db, site, device)
    reports = db.execute(f"{_REPORTS} WHERE site = ? AND device = ? ORDER BY id", (site, device))
    if info is None and not reports:
        raise StoreError(f"nothing is held about device {site}/{device}")
    alerts = db.execute(f"{_ALERTS} WHERE site = ? AND device = ? ORDER BY id", (site, device))
    rejections = db.execute(
        "SELECT at_ms, reason, topic, size, detail FROM rejections "
        "WHERE site = ? AND device = ? ORDER BY id",
        (site, device),
    )
    return {
        "subject": {"site": site, "device": device},
        "device": device_json(info) if info else None,
        "reports": _reports(db, reports),
        "alerts": [_alert(db, a) for a in alerts],
        "rejections": [
            {"at_ms": int(r[0]), "reason": r[1], "topic": r[2], "size": int(r[3]), "detail": r[4]}
            for r in rejections
        ],
    }


def export_user(db: Database, user: str) -> dict[str, Any]:
    """Everything held that names one user (reports with client.user, and their alerts)."""
    reports = db.execute(f"{_REPORTS} WHERE client_user = ? ORDER BY id", (user,))
    ids = {int(r[0]) for r in reports}
    devices = sorted({(r[1], r[2]) for r in reports})
    alerts = []
    for site, device in devices:
        for a in db.execute(f"{_ALERTS} WHERE site = ? AND device = ? ORDER BY id", (site, device)):
            if ids.intersection(int(i) for i in json.loads(a[12])):
                alerts.append(_alert(db, a))
    return {
        "subject": {"user": user},
        "devices": [{"site": s, "device": d} for s, d in devices],
        "reports": _reports(db, reports),
        "alerts": alerts,
    }
