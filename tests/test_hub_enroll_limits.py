"""Enrolment service without MQTT: rate limits, PostgreSQL, tokens and durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.enrolment_client import build_request, finish
from common.enrolment import EnrollRefused, EnrollToken
from common.wire import OpenError
from common.wire.envelope import enroll_request_id, seal
from common.wire.header import Kind
from common.wire.keyfile import b64
from common.wire.signing import SigningKey
from hub.enroll.answer import EnrollService
from hub.enroll.ratelimit import RateLimiter
from hub.enroll.tokens import parse_duration, token_hash
from hub.errors import HubError
from hub.store.devices import list_devices
from tests.enroll_fixtures import SITE, T0, enroll_direct, make_hub

LIMITS = "[enroll]\nrate_per_minute = 3\nsite_rate_per_minute = 2\n"


def test_rate_limit_per_site_and_overall(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, extra_toml=LIMITS)
    service = EnrollService(hub.config, hub.keys)
    token = hub.token(uses=100)
    other_site = hub.token(uses=100, site="mill-lane")

    def attempt(site: str, now: int, tok: EnrollToken) -> bool:
        request = build_request(
            tok, site=site, device_class="pupil-laptop", hub_key=hub.keys.sealing_key, now_ms=now
        )
        db = hub.db()
        try:
            with db.transaction():
                return service.handle(db, request.request_id, request.data, now).final
        finally:
            db.close()

    assert [attempt(SITE, T0, token) for _ in range(3)] == [True, True, False]  # site limit 2
    assert attempt("mill-lane", T0 + 1, other_site) is True  # overall limit 3 reached now
    assert attempt("mill-lane", T0 + 2, other_site) is False
    assert attempt(SITE, T0 + 60_000, token) is True  # the window has moved on
    assert service.counts["rate_limited"] == 2 and service.limiter.limited == 2
    db = hub.db()
    try:
        assert len(list_devices(db)) == 4  # limited requests registered nothing
    finally:
        db.close()


def test_junk_never_uses_up_the_limit_and_busy_says_when(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, extra_toml=LIMITS)
    service = EnrollService(hub.config, hub.keys)
    token = hub.token(uses=10)
    db = hub.db()
    try:
        for n in range(20):  # forged: signed by a key other than the one the id names
            good = build_request(
                token, site=SITE, device_class="pupil-laptop",
                hub_key=hub.keys.sealing_key, now_ms=T0,
            )  # fmt: skip
            other = build_request(
                token, site=SITE, device_class="pupil-laptop",
                hub_key=hub.keys.sealing_key, now_ms=T0,
            )  # fmt: skip
            with pytest.raises(OpenError), db.transaction():
                service.handle(db, other.request_id, good.data, T0 + n)
        replies = []
        for _ in range(3):
            request = build_request(
                token, site=SITE, device_class="pupil-laptop",
                hub_key=hub.keys.sealing_key, now_ms=T0,
            )  # fmt: skip
            with db.transaction():
                replies.append((request, service.handle(db, request.request_id, request.data, T0)))
    finally:
        db.close()
    assert [r.final for _, r in replies] == [True, True, False]  # junk counted for nothing
    request, busy = replies[-1]
    with pytest.raises(EnrollRefused) as info:
        finish(request, busy.data, hub_verify_keys=(hub.keys.signing.verify_key,), broker_url="x")
    assert info.value.reason == "busy" and info.value.retry_after_s == 60


def test_rate_limiter_table() -> None:
    limiter = RateLimiter(per_minute=2, site_per_minute=1)
    steps = [("a", 0, True), ("a", 1, False), ("b", 2, True), ("c", 3, False), ("a", 60_001, True)]
    for site, now, expected in steps:
        assert limiter.allow(site, now) is expected, (site, now)


def test_enrolment_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    hub = make_hub(tmp_path, database_url=pg_url)
    service = EnrollService(hub.config, hub.keys)
    token = hub.token(uses=2)
    identity, policy = enroll_direct(hub, service, token)
    enroll_direct(hub, service, token)
    with pytest.raises(EnrollRefused) as info:
        enroll_direct(hub, service, token)
    assert info.value.reason == "spent"
    db = hub.db()
    try:
        assert identity.device in {d.device for d in list_devices(db, SITE)}
    finally:
        db.close()
    assert policy


def test_replayed_request_is_refused(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    service = EnrollService(hub.config, hub.keys)
    token = hub.token(uses=2)
    request = build_request(
        token, site=SITE, device_class="pupil-laptop", hub_key=hub.keys.sealing_key, now_ms=T0
    )
    db = hub.db()
    try:
        for _ in range(2):
            with db.transaction():
                answer = service.handle(db, request.request_id, request.data, T0)
        assert service.counts["refused:already_enrolled"] == 1 and answer is not None
        assert db.execute("SELECT uses_left FROM enroll_tokens") == [(1,)]  # not spent twice
    finally:
        db.close()


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("hw1-abcd-efgh-ijkl-mnop-qrst-uvwx-yz23", True),
        ("HW1 ABCD EFGH IJKL MNOP QRST UVWX YZ23", True),
        ("HW1-ABCD", False),
        ("XX1-ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23", False),
    ],
)
def test_token_parsing(text: str, ok: bool) -> None:
    if ok:
        assert EnrollToken.parse(text).text == "HW1-ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23"
    else:
        with pytest.raises(Exception, match="token"):
            EnrollToken.parse(text)


def test_lookalike_characters_hash_the_same() -> None:
    typed = EnrollToken.parse("HW1-ABCD-EFGH-IJKL-MN0P-QRST-UVWX-YZ23")  # a zero for the O
    assert token_hash(typed) == token_hash(EnrollToken.parse("HW1-ABCDEFGHIJKLMNOPQRSTUVWXYZ23"))


@pytest.mark.parametrize(
    ("text", "ms"), [("90s", 90_000), ("30m", 1_800_000), ("12h", 43_200_000), ("7d", 604_800_000)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "7", "0d", "1y", "-1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(HubError):
        parse_duration(text)


def test_sinkhole_enrolment_republishes_site_policies(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    sent: dict[str, bytes] = {}
    service = EnrollService(
        hub.config,
        hub.keys,
        publish=lambda topic, payload, retain: sent.__setitem__(topic, payload),
    )
    laptop, _ = enroll_direct(hub, service, hub.token())
    assert set(sent) == {
        f"hedgerow/v1/{SITE}/policy",
        f"hedgerow/v1/{SITE}/{laptop.device}/policy",
    }
    sent.clear()
    pi, _ = enroll_direct(hub, service, hub.token("sinkhole", group=None), device_class="sinkhole")
    assert f"hedgerow/v1/{SITE}/{laptop.device}/policy" in sent  # the laptop learns the beacon key
    assert "hedgerow/v1/hub/keys" in sent and pi.beacon_key is not None


def test_a_reply_key_nothing_can_be_sealed_to_changes_nothing(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    service = EnrollService(hub.config, hub.keys)
    token = hub.token(uses=1)
    key = SigningKey.generate()
    document = {"v": 1, "token": token.text, "reply_key": b64(bytes(32))}  # all zeros
    request_id = enroll_request_id(key.public)
    data = seal(
        Kind.ENROLL, document, site=SITE, device=request_id, seq=1, time_ms=T0,
        to=hub.keys.sealing_key, signer=key,
    )  # fmt: skip
    db = hub.db()
    try:
        with pytest.raises(OpenError, match="reply key"), db.transaction():
            service.handle(db, request_id, data, T0)
        assert db.execute("SELECT uses_left FROM enroll_tokens") == [(1,)]
        assert list_devices(db) == []
    finally:
        db.close()
