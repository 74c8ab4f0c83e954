"""Device-side enrolment: online with a technician's token over MQTT, or offline from a bundle.

Both end the same way: an identity directory (common/identity.py) holding the device's own
Ed25519 key, the hub's public keys, MQTT credentials and the first signed policy.
The protocol and the token format are in docs/enrolment.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.policy_client import accept_policy
from agent.report.errors import LinkError
from agent.report.mqtt import Message
from agent.report.session import MqttSession
from common.enrolment import (
    BUNDLE_TYPE,
    ENROLL_USER,
    HUB_KEYS_SITE,
    EnrollError,
    EnrollRefused,
    EnrollToken,
    hub_fingerprint,
)
from common.identity import DEVICE_CLASSES, Identity, MqttCredentials, parse_hub_document
from common.wire import topics
from common.wire.envelope import enroll_request_id, seal, split, unseal
from common.wire.errors import OpenError, WireError
from common.wire.header import Kind, SuiteId, valid_name
from common.wire.keyfile import PUBLIC_MODE, b64, read_json, unb64, write_atomic
from common.wire.signed import open_signed
from common.wire.signing import SigningKey, VerifyKey
from common.wire.suites import OpeningKey, SealingKey

log = logging.getLogger(__name__)


def check_hub_keys(data: bytes, fingerprint: str) -> tuple[SealingKey, tuple[VerifyKey, ...]]:
    """Verify the retained hub-keys message against the fingerprint in a token.

    Raises EnrollError unless one of its signing keys has this fingerprint and signed it.
    """
    try:
        _, _, body, _ = split(data)
        document = json.loads(body)["document"]
        _, keys = parse_hub_document(document)
        key = next((k for k in keys if hub_fingerprint(k) == fingerprint), None)
        if key is None:
            raise EnrollError("the hub's keys do not match the token's fingerprint (wrong hub?)")
        message = open_signed(data, hub_keys=[key], site=HUB_KEYS_SITE, device=ENROLL_USER)
        return parse_hub_document(message.payload["document"])
    except (OpenError, KeyError, TypeError, ValueError, WireError) as exc:
        raise EnrollError(f"the hub-keys message is not valid: {exc}") from exc


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    """A request as sent, with the private keys the device keeps to finish enrolment."""

    site: str
    device_class: str | None  # None: the token decides (the hub's reply says which)
    key: SigningKey
    reply_key: OpeningKey
    beacon_key: SigningKey | None
    request_id: str
    data: bytes


def build_request(
    token: EnrollToken,
    *,
    site: str,
    device_class: str | None,
    hub_key: SealingKey,
    now_ms: int,
    group: str | None = None,
    hostname: str | None = None,
) -> EnrollRequest:
    """Generate the device's keys and seal an enrolment request to the hub. Without a class
    (and group) the token's apply; with one, the hub refuses it unless the token agrees."""
    if not valid_name(site):
        raise EnrollError(f"site {site!r} is not 1-63 chars of [a-z0-9._-]")
    if device_class is not None and device_class not in DEVICE_CLASSES:
        raise EnrollError(f"class {device_class!r} must be one of {', '.join(DEVICE_CLASSES)}")
    key = SigningKey.generate()
    reply_key = OpeningKey.generate(SuiteId.X25519)
    beacon = SigningKey.generate() if device_class == "sinkhole" else None
    document: dict[str, Any] = {
        "v": 1,
        "token": token.text,
        "reply_key": b64(reply_key.public_key.public),
    }
    if device_class is not None:
        document["class"] = device_class
    if group is not None:
        document["group"] = group
    if hostname is not None:
        document["hostname"] = hostname[:255]
    if beacon is not None:
        document["beacon_key"] = b64(beacon.public)
    request_id = enroll_request_id(key.public)
    data = seal(
        Kind.ENROLL,
        document,
        site=site,
        device=request_id,
        seq=1,
        time_ms=now_ms,
        to=hub_key,
        signer=key,
    )
    return EnrollRequest(site, device_class, key, reply_key, beacon, request_id, data)


def finish(
    request: EnrollRequest,
    reply: bytes,
    *,
    hub_verify_keys: tuple[VerifyKey, ...],
    broker_url: str,
    ca: str | None = None,
) -> tuple[Identity, bytes]:
    """Open the hub's reply; return the identity to save and the signed policy it carried.

    Raises EnrollRefused if the hub said no, EnrollError if the reply is not valid.
    """
    last: OpenError | None = None
    for hub_key in hub_verify_keys:
        try:
            opened = unseal(reply, signer=hub_key, key=request.reply_key, kind=Kind.ENROLL)
            break
        except OpenError as exc:
            last = exc
    else:
        raise EnrollError(f"the enrolment reply is not from this hub: {last}")
    doc = opened.payload
    if doc["status"] != "ok":
        raise EnrollRefused(
            str(doc.get("reason", "refused")),
            str(doc.get("detail", "")),
            retry_after_s=_retry_after(doc.get("retry_after_s")),
        )
    try:
        hub_key_now, verify = parse_hub_document(doc["hub"])
        mqtt = doc["mqtt"]
        identity = Identity(
            site=str(doc["site"]),
            device=str(doc["device"]),
            device_class=str(doc["class"]),
            group=doc.get("group"),
            key=request.key,
            hub_key=hub_key_now,
            hub_verify_keys=verify,
            mqtt=MqttCredentials(broker_url, str(mqtt["username"]), str(mqtt["password"]), ca),
            beacon_key=request.beacon_key,
        )
        policy = unb64(str(doc["policy"]), "policy")
    except (KeyError, TypeError, WireError) as exc:
        raise EnrollError(f"the enrolment reply is incomplete: {exc}") from exc
    wrong_class = request.device_class not in (None, identity.device_class)
    if identity.site != request.site or wrong_class or identity.device_class not in DEVICE_CLASSES:
        raise EnrollError("the enrolment reply is for another site or class")
    return identity, policy


def install(identity_dir: Path, identity: Identity, policy: bytes) -> Identity:
    """Check the policy against the new identity, then write the directory and the policy."""
    open_signed(
        policy, hub_keys=identity.hub_verify_keys, site=identity.site, device=identity.device
    )
    identity.save(identity_dir)
    accept_policy(identity_dir, policy)
    log.info("enrolled as %s/%s in %s", identity.site, identity.device, identity_dir)
    return Identity.load(identity_dir)


class EnrollTransport(Protocol):
    """What online enrolment needs from MQTT (agent.report.mqtt.MqttSession provides it)."""

    def connect(self, timeout_s: float) -> None:
        """Connect as the enrolment user."""

    def subscribe(self, topic_filter: str, timeout_s: float) -> None:
        """Subscribe and wait for the broker's acknowledgement."""

    def publish(self, topic: str, payload: bytes, *, retain: bool, timeout_s: float) -> None:
        """Publish at QoS 1 and wait for the acknowledgement."""

    def receive(self, timeout_s: float) -> Message | None:
        """The next message, or None after the timeout."""

    def close(self) -> None:
        """Disconnect."""


STEP_S = 5.0  # a SUBACK or PUBACK later than this means the link was lost: start again
RESUBSCRIBE_S = 2.0  # how often a wait re-subscribes (a dropped link loses subscriptions)
RETAINED_WAIT_S = 1.5  # on a new attempt, how long to wait for an answer already retained


def _retry_after(value: object) -> int | None:
    return value if isinstance(value, int) and 1 <= value <= 3600 else None


def _step(deadline: float) -> float:
    return max(0.1, min(STEP_S, deadline - time.monotonic()))


def _wait_for(transport: EnrollTransport, topic: str, until: float) -> bytes | None:
    """The next message on `topic` before `until`, or None. Subscribing again every
    RESUBSCRIBE_S restores the subscription after a reconnect (the broker then hands over a
    retained answer); a subscription that is not acknowledged raises LinkError."""
    while (left := until - time.monotonic()) > 0:
        message = transport.receive(min(left, RESUBSCRIBE_S))
        if message is not None and message.topic == topic and message.payload:
            return message.payload
        if message is None and until - time.monotonic() > 0:
            transport.subscribe(topic, _step(until))
    return None


def enroll_online(
    identity_dir: Path,
    *,
    token: str,
    site: str,
    broker_url: str,
    device_class: str | None = None,
    group: str | None = None,
    hostname: str | None = None,
    ca: str | None = None,
    timeout_s: float = 60.0,
    transport: EnrollTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> Identity:
    """Enrol with a technician's token over MQTT and write `identity_dir`. Raises EnrollError.

    The device logs in with the token's own broker account (EnrollToken.login). Devices that
    share a token share that login, and the broker lets only one connection hold it at a
    time: a device that loses its connection connects again after a short random pause, reads
    the hub's answer if it was retained meanwhile, and otherwise sends its request again (the
    same request: the hub answers it once). A hub that is busy says when to ask again. All of
    it within `timeout_s`."""
    identity_dir = Path(identity_dir)
    if (identity_dir / "device.json").exists():
        raise EnrollError(f"{identity_dir} is already enrolled; remove it to enrol again")
    parsed = EnrollToken.parse(token)
    user, password = parsed.login
    credentials = MqttCredentials(broker_url, user, password, ca)
    deadline = time.monotonic() + timeout_s
    request: EnrollRequest | None = None
    verify: tuple[VerifyKey, ...] = ()
    while True:
        link = transport or MqttSession(credentials, client_id=f"enroll-{secrets.token_hex(8)}")
        try:
            link.connect(_step(deadline))
            if request is None:
                link.subscribe(topics.hub_keys(), _step(deadline))
                keys = _wait_for(link, topics.hub_keys(), deadline)
                if keys is None:
                    raise EnrollError("the hub's keys are not on the broker (is the hub set up?)")
                hub_key, verify = check_hub_keys(keys, parsed.fingerprint)
                request = build_request(
                    parsed,
                    site=site,
                    device_class=device_class,
                    hub_key=hub_key,
                    now_ms=int(clock() * 1000),
                    group=group,
                    hostname=hostname,
                )
                identity, policy = _ask(link, request, verify, deadline, broker_url, ca, False)
            else:
                identity, policy = _ask(link, request, verify, deadline, broker_url, ca, True)
            break
        except LinkError as exc:
            if transport is not None or time.monotonic() + 1 >= deadline:
                raise EnrollError(f"cannot enrol over MQTT: {exc}") from exc
            log.info("lost the broker link while enrolling (%s); connecting again", exc)
        finally:
            link.close()
        time.sleep(random.uniform(0.2, 1.5))
    return install(identity_dir, identity, policy)


def _ask(
    link: EnrollTransport,
    request: EnrollRequest,
    verify: tuple[VerifyKey, ...],
    deadline: float,
    broker_url: str,
    ca: str | None,
    again: bool,
) -> tuple[Identity, bytes]:
    """Send the request (after looking for an answer already retained, when `again`), and
    again each time the hub answers "busy", until a final answer."""
    reply_topic = topics.enroll_reply(request.request_id)
    link.subscribe(reply_topic, _step(deadline))
    reply = _wait_for(link, reply_topic, time.monotonic() + RETAINED_WAIT_S) if again else None
    while True:
        if reply is None:
            link.publish(
                topics.enroll_request(request.request_id),
                request.data,
                retain=False,
                timeout_s=_step(deadline),
            )
            reply = _wait_for(link, reply_topic, deadline)
        if reply is None:
            raise EnrollError(
                f"no answer on {reply_topic} in time (is hedgerow-hub serve running?)"
            )
        try:
            return finish(request, reply, hub_verify_keys=verify, broker_url=broker_url, ca=ca)
        except EnrollRefused as exc:
            wait = exc.retry_after_s
            if exc.reason != "busy" or wait is None or time.monotonic() + wait >= deadline:
                raise
            log.info("the hub is busy enrolling other devices; asking again in %d s", wait)
            time.sleep(wait)
            reply = None


def enroll_from_bundle(bundle_path: Path, identity_dir: Path) -> Identity:
    """Import an offline bundle made by `hedgerow-hub enroll bundle`; same result as online.

    The bundle holds private keys: delete it once imported (docs/enrolment.md).
    """
    identity_dir = Path(identity_dir)
    if (identity_dir / "device.json").exists():
        raise EnrollError(f"{identity_dir} is already enrolled; remove it to enrol again")
    try:
        doc = read_json(Path(bundle_path))
        if doc.get("type") != BUNDLE_TYPE or doc.get("v") != 1:
            raise EnrollError(f"{bundle_path}: not a Hedgerow enrolment bundle")
        hub_key, verify = parse_hub_document(doc["hub"])
        mqtt = doc["mqtt"]
        ca = _keep_broker_ca(identity_dir, mqtt.get("ca"), mqtt.get("ca_pem"))
        beacon = doc.get("beacon_private")
        identity = Identity(
            site=str(doc["site"]),
            device=str(doc["device"]),
            device_class=str(doc["class"]),
            group=doc.get("group"),
            key=SigningKey(unb64(str(doc["private"]), "private")),
            hub_key=hub_key,
            hub_verify_keys=verify,
            mqtt=MqttCredentials(
                str(mqtt["url"]), str(mqtt["username"]), str(mqtt["password"]), ca
            ),
            beacon_key=SigningKey(unb64(str(beacon), "beacon_private")) if beacon else None,
        )
        policy = base64.b64decode(str(doc["policy"]), validate=True)
    except (KeyError, TypeError, binascii.Error, WireError) as exc:
        raise EnrollError(f"{bundle_path}: bundle is incomplete or corrupt: {exc}") from exc
    return install(identity_dir, identity, policy)


BROKER_CA = "broker-ca.crt"


def _keep_broker_ca(identity_dir: Path, ca: object, pem: object) -> str | None:
    """The CA file the device verifies the broker with. A bundle from a hub with a PKI carries
    the CA certificate itself (`mqtt.ca_pem`, public): it is checked and written to the bundle's
    `ca` path, or to DIR/broker-ca.crt (0644); else `ca` as given (None: the system's CAs)."""
    if pem is None:
        return str(ca) if ca else None
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(str(pem).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise EnrollError(f"the bundle's broker CA is not a PEM certificate: {exc}") from exc
    path = Path(str(ca)) if ca else Path(identity_dir) / BROKER_CA
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, str(pem).encode("ascii"), PUBLIC_MODE)
    return str(path)


def enroll_from_args(args: argparse.Namespace, identity_dir: Path) -> Identity:
    """Run the enrolment that agent.enroll_args.add_enroll_arguments() describes. Raises EnrollError."""
    if args.bundle is not None:
        return enroll_from_bundle(args.bundle, identity_dir)
    if not args.site or not args.broker:
        raise EnrollError("--token needs --site and --broker")
    return enroll_online(
        identity_dir,
        token=args.token,
        site=args.site,
        device_class=args.device_class,
        broker_url=args.broker,
        group=args.group,
        hostname=socket.gethostname(),
        ca=args.ca,
        timeout_s=args.timeout,
    )
