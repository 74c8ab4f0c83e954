"""The device side of signed policies: accept only hub-signed versions that never go down.

A device follows two version streams, its site's policy and its own, each on its own retained
topic. The last accepted message of each is kept in the identity directory:

DIR/policy-site.msg, DIR/policy-device.msg   the raw signed messages (0644, no secrets)
DIR/policy.json                              {"site": version, "device": version}
"""

from __future__ import annotations

import logging
from pathlib import Path

from common.identity import Identity, hub_document, parse_hub_document
from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import decode_header
from common.wire.keyfile import PUBLIC_MODE, read_json, write_atomic, write_json
from common.wire.signed import SignedMessage, open_signed

log = logging.getLogger(__name__)

STATE_FILE = "policy.json"


def _stream(data: bytes) -> str:
    header, _ = decode_header(data)
    return "site" if header.device == "" else "device"


def accepted_versions(identity_dir: Path) -> dict[str, int]:
    """The last accepted version of each stream (0 if none yet)."""
    path = Path(identity_dir) / STATE_FILE
    if not path.exists():
        return {"site": 0, "device": 0}
    doc = read_json(path)
    return {name: int(doc.get(name, 0)) for name in ("site", "device")}


def accept_policy(identity_dir: Path, data: bytes) -> SignedMessage:
    """Verify a policy for this device or its site, and keep it if it is not older.

    Raises OpenError: bad_signature (tampered), wrong_key (another hub), unknown_device (another
    site or device), replay (older than the last accepted version), malformed or schema.
    """
    message = verify_policy(identity_dir, data)
    keep_policy(identity_dir, data, message)
    return message


def policy_stream(data: bytes) -> str:
    """"site" or "device": which of the two version streams a signed policy belongs to."""
    return _stream(data)


def verify_policy(identity_dir: Path, data: bytes) -> SignedMessage:
    """Check a policy as accept_policy does, without keeping it (the caller applies it first,
    and keeps it only if that worked). Raises OpenError."""
    identity_dir = Path(identity_dir)
    identity = Identity.load(identity_dir)
    versions = accepted_versions(identity_dir)
    return open_signed(
        data,
        hub_keys=identity.hub_verify_keys,
        site=identity.site,
        device=identity.device,
        min_version=versions[_stream(data)],
    )


def keep_policy(identity_dir: Path, data: bytes, message: SignedMessage) -> None:
    """Keep a verified policy as the last accepted of its stream (and follow its hub key)."""
    identity_dir = Path(identity_dir)
    stream = _stream(data)
    versions = accepted_versions(identity_dir)
    write_atomic(identity_dir / f"policy-{stream}.msg", data, PUBLIC_MODE)
    versions[stream] = message.version
    write_json(identity_dir / STATE_FILE, dict(versions), private=False)
    _follow_hub_key(identity_dir, Identity.load(identity_dir), message)
    log.info("accepted %s policy version %d", stream, message.version)


def current_policy(identity_dir: Path, stream: str = "device") -> SignedMessage | None:
    """The last accepted policy of a stream, verified again, or None if there is none."""
    identity_dir = Path(identity_dir)
    path = identity_dir / f"policy-{stream}.msg"
    if not path.exists():
        return None
    identity = Identity.load(identity_dir)
    return open_signed(
        path.read_bytes(),
        hub_keys=identity.hub_verify_keys,
        site=identity.site,
        device=identity.device,
    )


def _follow_hub_key(identity_dir: Path, identity: Identity, message: SignedMessage) -> None:
    """Seal to the hub's current HPKE key once a signed policy names a new one.

    Only the sealing key follows the policy; the trusted signing keys stay as enrolled.
    """
    document = message.payload.get("document") or {}
    hub = document.get("hub")
    if not isinstance(hub, dict):
        return
    try:
        key, _ = parse_hub_document(hub)
    except (KeyError, TypeError, WireError) as exc:
        raise OpenError(Reason.SCHEMA, f"policy names a bad hub key: {exc}") from exc
    if key != identity.hub_key:
        write_json(
            identity_dir / "hub.json",
            hub_document(key, identity.hub_verify_keys),
            private=False,
        )
        log.info("hub sealing key is now %s (from policy)", key.key_id.hex())
