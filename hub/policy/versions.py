"""Policy versions in the policies table: a new version only when the content changes.

Versions count up per site across the site policy and every device policy of that site, so a
device's policy_version (the higher of the two it has accepted) compares with any row.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from common.wire.signed import sign_message
from common.wire.signing import SigningKey
from hub.store import Database

log = logging.getLogger(__name__)


def canonical(document: dict[str, Any]) -> str:
    """The stored body: canonical JSON, so equal content compares equal."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed_policy(
    db: Database,
    *,
    site: str,
    device: str,
    document: dict[str, Any],
    signer: SigningKey,
    now_ms: int,
) -> tuple[int, bytes]:
    """The signed message for this content: the stored one if unchanged, else version + 1."""
    body = canonical(document)
    rows = db.execute(
        "SELECT version, body, signed FROM policies WHERE site = ? AND device = ? "
        "ORDER BY version DESC LIMIT 1",
        (site, device),
    )
    if rows and rows[0][1] == body:
        return int(rows[0][0]), bytes(rows[0][2])
    top = db.execute("SELECT MAX(version) FROM policies WHERE site = ?", (site,))
    version = int(top[0][0] or 0) + 1
    message = sign_message(
        {"v": 1, "site": site, "document": document},
        site=site,
        device=device,
        version=version,
        time_ms=now_ms,
        signer=signer,
    )
    db.execute(
        "INSERT INTO policies (site, device, version, body, signed, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (site, device, version, body, message, now_ms),
    )
    log.info("policy for %s/%s is now version %d", site, device or "*", version)
    return version, message
