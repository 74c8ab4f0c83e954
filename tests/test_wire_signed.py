"""Hub-signed messages, enrolment requests, topics and sequence numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.wire import (
    Kind,
    OpenError,
    OpeningKey,
    Reason,
    SigningKey,
    SuiteId,
    enroll_request_id,
    open_enroll_request,
    open_signed,
    seal,
    sign_message,
    topics,
)
from common.wire.sequence import Sequence
from tests.wire_fixtures import DEVICE, SITE, Ring

POLICY = {"v": 1, "site": SITE, "document": {"groups": {"pupils": {"block": ["adult"]}}}}


def signed(signer: SigningKey, version: int = 3, device: str = DEVICE, site: str = SITE) -> bytes:
    return sign_message(POLICY, site=site, device=device, version=version, time_ms=1, signer=signer)


def open_policy(data: bytes, signer: SigningKey, min_version: int = 0) -> int:
    return open_signed(
        data, hub_keys=[signer.verify_key], site=SITE, device=DEVICE, min_version=min_version
    ).version


def test_policy_round_trip_and_site_wide() -> None:
    hub = SigningKey.generate()
    assert open_policy(signed(hub), hub) == 3
    assert open_policy(signed(hub, device=""), hub) == 3  # site-wide policy


def test_policy_version_only_goes_up() -> None:
    hub = SigningKey.generate()
    assert open_policy(signed(hub, version=3), hub, min_version=3) == 3  # same: idempotent
    with pytest.raises(OpenError) as info:
        open_policy(signed(hub, version=2), hub, min_version=3)
    assert info.value.reason is Reason.REPLAY


def test_policy_from_another_key_or_tampered() -> None:
    hub = SigningKey.generate()
    with pytest.raises(OpenError) as info:
        open_policy(signed(SigningKey.generate()), hub)
    assert info.value.reason is Reason.WRONG_KEY
    data = bytearray(signed(hub))
    data[-70] ^= 1  # a body byte
    with pytest.raises(OpenError) as info:
        open_policy(bytes(data), hub)
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_policy_for_another_device_or_site() -> None:
    hub = SigningKey.generate()
    for data in (signed(hub, device="lt-001"), signed(hub, site="other-school")):
        with pytest.raises(OpenError) as info:
            open_policy(data, hub)
        assert info.value.reason is Reason.UNKNOWN_DEVICE


def test_enroll_request_proves_possession_of_the_named_key() -> None:
    hub = OpeningKey.generate()
    device = SigningKey.generate()
    request_id = enroll_request_id(device.public)
    doc = {"v": 1, "token": "T", "class": "pupil-laptop", "reply_key": "x" * 44}
    envelope = seal(
        Kind.ENROLL,
        doc,
        site=SITE,
        device=request_id,
        seq=1,
        time_ms=0,
        to=hub.public_key,
        signer=device,
    )
    opened = open_enroll_request(envelope, keyring=Ring([hub]))
    assert opened.payload["token"] == "T"
    # Someone else's key cannot claim this request id.
    forged = seal(
        Kind.ENROLL,
        doc,
        site=SITE,
        device=request_id,
        seq=1,
        time_ms=0,
        to=hub.public_key,
        signer=SigningKey.generate(),
    )
    with pytest.raises(OpenError) as info:
        open_enroll_request(forged, keyring=Ring([hub]))
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_topics() -> None:
    assert topics.up(SITE, DEVICE, Kind.SUMMARY) == "hedgerow/v1/cape-primary/lt-042/summary"
    parsed = topics.parse_up("hedgerow/v1/cape-primary/lt-042/event")
    assert parsed is not None and parsed.kind is Kind.EVENT and parsed.device == DEVICE
    for bad in [
        "hedgerow/v1/a/b",
        "hedgerow/v2/a/b/summary",
        "hedgerow/v1/A/b/summary",
        "hedgerow/v1/a/b/policy",
        "hedgerow/v1/a/b/c/summary",
    ]:
        assert topics.parse_up(bad) is None
    assert topics.site_policy(SITE) == "hedgerow/v1/cape-primary/policy"
    assert topics.device_policy(SITE, DEVICE) == "hedgerow/v1/cape-primary/lt-042/policy"


def test_sequence_never_repeats_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "seq"
    first = Sequence(path, block=10)
    used = [first.next() for _ in range(15)]
    # A crash: the next process starts after the reserved block, never reusing a number.
    second = Sequence(path, block=10)
    later = [second.next() for _ in range(5)]
    assert used == list(range(1, 16))
    assert min(later) > max(used)
    assert path.stat().st_mode & 0o777 == 0o600


def test_x25519_suite_keys_are_small() -> None:
    key = OpeningKey.generate(SuiteId.X25519)
    assert len(key.public_key.public) == 32
