"""Payload documents: canonical JSON, checked against a small versioned schema per kind.

JSON (not CBOR) because it needs no extra dependency on a Pi, a safeguarding lead can read a
decrypted record, and a third party can implement it from docs/protocol.md alone. Bodies are small
(a summary is a few KiB) so CBOR's size gain would not matter.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from common.text import unsafe
from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import Kind

PAYLOAD_VERSION = 1
MAX_INT = 2**63 - 1  # every integer in a payload: 0..MAX_INT (a signed 64-bit column holds it)
_NAME = re.compile(r"[\x21-\x7e]{0,255}")  # a DNS name in presentation format (common.text)
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
# An id in a payload (group, category, class, type, reason, site, device): the hub's ids
# (common.wire.header) and the filter's group and category names, which may start with "_".
_ID = re.compile(r"[a-z0-9_][a-z0-9._-]{0,62}")
Check = Callable[[Any, str], None]


class _SchemaViolation(Exception):
    pass


def _fail(path: str, rule: str) -> None:
    raise _SchemaViolation(f"{path}: {rule}")


def _int(value: Any, path: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        _fail(path, f"must be an integer from 0 to {MAX_INT}")


def _bool(value: Any, path: str) -> None:
    if type(value) is not bool:
        _fail(path, "must be true or false")


def _id(value: Any, path: str) -> None:
    if type(value) is not str or _ID.fullmatch(value) is None:
        _fail(path, "must be an id: 1-63 characters of [a-z0-9._-], not starting with . or -")


def _str(max_len: int = 255) -> Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not str or len(value) > max_len:
            _fail(path, f"must be a string of at most {max_len} characters")
        if unsafe(value):
            _fail(path, "must not hold control or bidirectional-override characters")

    return check


def _name(value: Any, path: str) -> None:
    if type(value) is not str or _NAME.fullmatch(value) is None:
        _fail(path, "must be a DNS name in presentation format (at most 255 printable ASCII)")


def _ip(value: Any, path: str) -> None:
    text = value if type(value) is str else ""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        _fail(path, "must be an IPv4 or IPv6 address")
    if "%" in text or len(text) > 45:  # a zone id ("fe80::1%eth0") is any text: refused
        _fail(path, "must be an IPv4 or IPv6 address without a zone")


def _mac(value: Any, path: str) -> None:
    if type(value) is not str or _MAC.fullmatch(value) is None:
        _fail(path, "must be a MAC address, six lower-case hex pairs joined by colons")


def _one_of(*choices: str) -> Check:
    def check(value: Any, path: str) -> None:
        if value not in choices:
            _fail(path, f"must be one of {', '.join(choices)}")

    return check


def _scalar(value: Any, path: str) -> None:
    if type(value) is str:
        _str(1024)(value, path)
    elif type(value) is int:
        _int(value, path)
    elif type(value) is not bool:
        _fail(path, "must be a string (<=1024), integer or boolean")


def _list(item: Check, max_len: int) -> Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not list or len(value) > max_len:
            _fail(path, f"must be a list of at most {max_len} items")
        for i, element in enumerate(value):
            item(element, f"{path}[{i}]")

    return check


def _map(item: Check, max_len: int = 256, *, id_keys: bool = False) -> Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not dict or len(value) > max_len:
            _fail(path, f"must be an object of at most {max_len} entries")
        for key, element in value.items():
            if len(key) > 255 or unsafe(key):
                _fail(path, "keys must be at most 255 characters, with no control characters")
            if id_keys and _ID.fullmatch(key) is None:
                _fail(path, f"key {key!r} must be an id (1-63 characters of [a-z0-9._-])")
            item(element, f"{path}.{key}")

    return check


def _obj(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    optional = optional or {}

    def check(value: Any, path: str) -> None:
        if type(value) is not dict:
            _fail(path, "must be an object")
        for key in required:
            if key not in value:
                _fail(f"{path}.{key}", "is required")
        for key, element in value.items():
            rule = required.get(key) or optional.get(key)
            if rule is None:
                _fail(f"{path}.{key}", "is not a known field")
            else:
                rule(element, f"{path}.{key}")

    return check


def _version(value: Any, path: str) -> None:
    if value != PAYLOAD_VERSION or type(value) is not int:
        _fail(path, f"must be {PAYLOAD_VERSION}")


_CLIENT = _obj(
    {"ip": _ip, "group": _id},
    {"mac": _mac, "user": _str(255), "hostname": _str(255)},
)
_BLOCKED = _obj({"name": _name, "category": _id, "count": _int})
_SITE_STATE = _one_of("on_site", "off_site", "captive", "unknown")
# A laptop agent's summary: where it was in the window, and what the laptop did (protocol 6.4).
_SITE = _obj(
    {},
    {
        "state": _SITE_STATE,
        "on_site_s": _int,
        "off_site_s": _int,
        "captive_s": _int,
        "unknown_s": _int,
        "network": _str(64),
    },
)
_ACTIVITY = _obj(
    {},
    {
        "user": _str(255),
        "users": _int,
        "awake_s": _int,
        "active_s": _int,
        "processes_new": _map(_int, 1_000),
        "processes_new_count": _int,
        "flagged_apps": _list(_obj({"name": _str(255), "count": _int}), 256),
        "tunnels": _list(_str(63), 64),
        "interfaces": _map(_obj({}, {"rx_bytes": _int, "tx_bytes": _int}), 64),
    },
)
_ALLOWED = _obj({"domain": _name, "count": _int})

_ENROLL_REQUEST = _obj(
    {"v": _version, "token": _str(255), "reply_key": _str(64)},
    {
        "class": _id,  # absent: the token's class
        "hostname": _str(255),
        "group": _id,
        "beacon_key": _str(64),
        "detail": _map(_scalar, 64),
    },
)
# The hub answers with the same kind, sealed to the request's reply key (docs/enrolment.md).
_ENROLL_REPLY = _obj(
    {"v": _version, "status": _one_of("ok", "refused")},
    {
        "reason": _id,
        "detail": _str(255),
        "retry_after_s": _int,  # with reason "busy": ask again after this many seconds
        "site": _id,
        "device": _id,
        "class": _id,
        "group": _id,
        "hub": _map(lambda v, p: None, 16),  # common.identity.hub_document; parsed by the device
        "policy": _str(400_000),  # base64 of the device's signed policy
        "mqtt": _map(_scalar, 8),
    },
)


def _enroll(value: Any, path: str) -> None:
    is_reply = type(value) is dict and "status" in value
    (_ENROLL_REPLY if is_reply else _ENROLL_REQUEST)(value, path)


SCHEMAS: dict[Kind, Check] = {
    Kind.SUMMARY: _obj(
        {
            "v": _version,
            "source": _one_of("dns", "agent"),
            "start": _int,
            "end": _int,
            "client": _CLIENT,
            "counts": _map(_int, id_keys=True),
            "categories": _map(_int, id_keys=True),
            "blocked": _list(_BLOCKED, 10_000),
            "first_seen": _int,
            "last_seen": _int,
        },
        {
            "top_allowed": _list(_ALLOWED, 1_000),
            "location": _one_of("onsite", "offsite", "unknown"),
            "policy_version": _int,
            "counts_only": _bool,
            "site": _SITE,
            "activity": _ACTIVITY,
        },
    ),
    Kind.EVENT: _obj(
        {"v": _version, "type": _id, "at": _int},
        {
            "category": _id,
            "name": _name,
            "client": _CLIENT,
            "count": _int,
            "detail": _map(_scalar, 64),
        },
    ),
    Kind.HEARTBEAT: _obj(
        {"v": _version, "uptime_s": _int, "policy_version": _int},
        {
            "location": _one_of("onsite", "offsite", "unknown"),
            "clean_stop": _bool,
            "filter_active": _bool,
            "resolver": _str(255),
            "software": _str(63),
            "site_state": _SITE_STATE,
            "spool_depth": _int,
            "health": _list(_str(255), 32),
        },
    ),
    Kind.ENROLL: _enroll,
    # Policies are hub-authored; hub/policy checks their full shape. The wire layer checks the frame.
    Kind.POLICY: _obj(
        {"v": _version, "site": _id}, {"document": _map(lambda v, p: None, 1024)}
    ),
}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _SchemaViolation(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _SchemaViolation(f"{name} is not valid JSON")


def validate(kind: Kind, document: Any) -> None:
    """Raise OpenError(schema) unless `document` fits the schema of `kind`."""
    try:
        SCHEMAS[kind](document, "$")
    except _SchemaViolation as exc:
        raise OpenError(Reason.SCHEMA, str(exc)) from exc
    except RecursionError as exc:
        raise OpenError(Reason.SCHEMA, "nested too deeply") from exc


def encode(kind: Kind, document: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of a valid document; raises WireError if it does not fit the schema."""
    try:
        validate(kind, dict(document))
    except OpenError as exc:
        raise WireError(
            f"payload does not fit the {kind.name.lower()} schema: {exc.detail}"
        ) from exc
    text = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.encode("utf-8")


def strict_json(body: bytes) -> Any:
    """A body as JSON, strictly: UTF-8, no duplicate keys, no NaN or Infinity; raises
    OpenError(schema) otherwise. Every signed or sealed body is read this way."""
    try:
        return json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, _SchemaViolation, RecursionError) as exc:
        raise OpenError(Reason.SCHEMA, f"not a JSON document: {exc}") from exc


def decode(kind: Kind, body: bytes) -> dict[str, Any]:
    """Parse and check a body; raises OpenError(schema) for anything that is not a valid document."""
    document = strict_json(body)
    validate(kind, document)
    assert isinstance(document, dict)  # validate() guarantees an object
    return document
