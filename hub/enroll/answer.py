"""The hub's answer to an enrolment request on hedgerow/v1/enroll/<request_id>/request.

Order: size and header, topic matches header, proof of possession and decryption
(common.wire.open_enroll_request: Ed25519 then HPKE, both cheap), the site's rate limit, token
(scrypt), register. A request that does not prove possession of its key raises OpenError (ingest
counts it) and never counts against a limit, so junk cannot use up a site's enrolments. Every
request that opens gets an answer sealed to its reply key: "ok", or "refused" with a reason; one
over its site's limit is refused as "busy" with `retry_after_s`, and the device sends it again
then. Final answers are published retained with a message expiry (REPLY_EXPIRY_S), so a device
whose connection dropped while the hub answered reads its answer when it reconnects.

The broker files are rewritten, and [enroll] broker_reload run, inside the request's
transaction, before the reply goes out: the broker knows the new account by the time the device
reads its password. A reload that fails is logged and counted (broker_reload:failed, and
hedgerow_hub_broker_reloads_total{result="failed"}); the enrolment stands.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.identity import hub_document
from common.wire import topics
from common.wire.envelope import enroll_request_key, open_enroll_request, seal, split
from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import Kind, SuiteId
from common.wire.keyfile import b64, unb64
from common.wire.signing import PUBLIC_LEN
from common.wire.suites import SealingKey
from hub.config import HubConfig
from hub.enroll.broker import BrokerFiles, write_broker_files
from hub.enroll.ratelimit import RateLimiter
from hub.enroll.registry import (
    Registration,
    allocate_device_id,
    key_enrolled,
    register,
    resolve_group,
)
from hub.enroll.settings import load_enroll_settings
from hub.enroll.tokens import TokenRefused, find_token, spend_token
from hub.errors import HubError
from hub.keys import HubKeys
from hub.metrics import HubMetrics
from hub.policy.publish import publish_all, site_policy
from hub.store import Database

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]
REPLY_EXPIRY_S = 600  # how long the broker keeps a retained final answer


@dataclass(frozen=True, slots=True)
class EnrollReply:
    """What to publish: the sealed answer on its reply topic, and whether it is final (ok or
    refused; retained with an expiry) or "busy" (not retained: the device asks again)."""

    topic: str
    data: bytes
    final: bool


class EnrollService:
    """Answers enrolment requests; serve calls handle() inside a transaction per request."""

    def __init__(
        self,
        config: HubConfig,
        keys: HubKeys,
        *,
        publish: Publish | None = None,
        metrics: HubMetrics | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.publish = publish  # if given, policies that an enrolment changes are republished
        self.metrics = metrics
        settings = load_enroll_settings(config)
        self.limiter = RateLimiter(settings.rate_per_minute, settings.site_rate_per_minute)
        self.counts: Counter[str] = Counter()

    def handle(self, db: Database, request_id: str, data: bytes, now_ms: int) -> EnrollReply:
        """The sealed answer to one request.

        Raises OpenError for a request that cannot be opened (no reply key to answer to).
        """
        header = split(data)[0]
        if header.device != request_id:
            raise OpenError(Reason.MALFORMED, "request topic and header disagree")
        opened = open_enroll_request(data, keyring=self.keys)
        doc = opened.payload
        try:
            reply_key = SealingKey(SuiteId.X25519, unb64(doc["reply_key"], "reply_key"))
            # A key nothing can be sealed to (all zeros, a low-order point) is refused now,
            # before a token is spent or an account made for a reply that cannot be sent.
            self._seal(header.site, request_id, {"v": 1, "status": "refused"}, reply_key, now_ms)
        except (WireError, ValueError) as exc:
            raise OpenError(Reason.SCHEMA, f"bad reply key: {exc}") from exc
        final = True
        wait_s = self.limiter.retry_after_s(header.site, now_ms)
        if wait_s is not None:
            self.counts["rate_limited"] += 1
            log.warning(
                "enrolment request for site %s: over its rate limit, told to retry in %d s",
                header.site, wait_s,
            )  # fmt: skip
            answer: dict[str, Any] = {
                "v": 1, "status": "refused", "reason": "busy",
                "detail": "too many enrolments this minute", "retry_after_s": wait_s,
            }  # fmt: skip
            final = False
        else:
            try:
                answer = self._enroll(db, header.site, request_id, doc, now_ms)
            except TokenRefused as exc:
                self.counts[f"refused:{exc.reason}"] += 1
                log.info("enrolment for site %s refused: %s", header.site, exc)
                answer = {"v": 1, "status": "refused", "reason": exc.reason, "detail": exc.detail}
                # A request sent again is "already enrolled": that answer must not replace
                # the retained "ok" the device has still to read.
                final = exc.reason != "already_enrolled"
        reply = self._seal(header.site, request_id, answer, reply_key, now_ms)
        return EnrollReply(topics.enroll_reply(request_id), reply, final)

    def _seal(
        self, site: str, request_id: str, answer: dict[str, Any], to: SealingKey, now_ms: int
    ) -> bytes:
        return seal(
            Kind.ENROLL,
            answer,
            site=site,
            device=request_id,
            seq=1,
            time_ms=now_ms,
            to=to,
            signer=self.keys.signing,
        )

    def _enroll(
        self, db: Database, site: str, request_id: str, doc: dict[str, Any], now_ms: int
    ) -> dict[str, Any]:
        grant = find_token(db, doc["token"], site=site, now_ms=now_ms)
        if doc.get("class", grant.device_class) != grant.device_class:
            raise TokenRefused("wrong_class", f"the token is for a {grant.device_class}")
        try:  # the token (or the site's default for its class) decides, never the device
            group = resolve_group(self.config, site, grant.device_class, grant.group)
        except HubError as exc:
            raise TokenRefused("unknown_group", str(exc)) from exc
        asked = doc.get("group")
        if asked is not None and asked != group:
            raise TokenRefused("wrong_group", f"the token puts this device in group {group}")
        beacon = self._beacon_key(grant.device_class, doc.get("beacon_key"))
        verify_key = enroll_request_key(request_id).public
        if key_enrolled(db, verify_key):
            raise TokenRefused("already_enrolled", "this device key is already enrolled")
        spend_token(db, grant)
        reg = register(
            db,
            self.keys,
            self.config,
            site=site,
            device=allocate_device_id(db, grant.device_class),
            device_class=grant.device_class,
            group=group,
            verify_key=verify_key,
            beacon_key=beacon,
            hostname=doc.get("hostname"),
            now_ms=now_ms,
        )
        self._count_reload(write_broker_files(db, self.config, now_ms=now_ms))
        self._republish(db, reg, now_ms)
        self.counts["enrolled"] += 1
        return self._welcome(reg)

    def _count_reload(self, files: BrokerFiles) -> None:
        if files.reload is None:
            return  # no broker_reload: the systemd path unit reloads Mosquitto
        result = "ok" if files.reload.ok else "failed"
        self.counts[f"broker_reload:{result}"] += 1
        if self.metrics is not None:
            self.metrics.broker_reloads.labels(result).inc()

    @staticmethod
    def _beacon_key(device_class: str, text: Any) -> bytes | None:
        if device_class != "sinkhole":
            return None
        if text is None:
            raise TokenRefused("bad_request", "a sinkhole must send its beacon public key")
        try:
            key = unb64(str(text), "beacon_key")
        except WireError as exc:
            raise TokenRefused("bad_request", "beacon key is not base64") from exc
        if len(key) != PUBLIC_LEN:
            raise TokenRefused("bad_request", "beacon key must be an Ed25519 public key")
        return key

    def _welcome(self, reg: Registration) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "v": 1,
            "status": "ok",
            "site": reg.info.site,
            "device": reg.info.device,
            "class": reg.info.device_class,
            "hub": hub_document(self.keys.sealing_key, (self.keys.signing.verify_key,)),
            "policy": b64(reg.policy),
            "mqtt": {"username": reg.mqtt_user, "password": reg.mqtt_password},
        }
        if reg.info.group is not None:
            answer["group"] = reg.info.group
        return answer

    def _republish(self, db: Database, reg: Registration, now_ms: int) -> None:
        if self.publish is None:
            return
        if reg.info.beacon_key is not None:
            publish_all(db, self.keys, self.config, self.publish, now_ms=now_ms)
            return  # a new beacon key changes every policy of the site
        site = reg.info.site
        self.publish(
            topics.site_policy(site), site_policy(db, self.keys, self.config, site, now_ms)[1], True
        )
        self.publish(topics.device_policy(site, reg.info.device), reg.policy, True)
