"""The sealed envelope: round trips, tampering, keys, replay and sizes."""

from __future__ import annotations

import pytest

from common.wire import (
    MAX_ENVELOPE,
    DeviceRecord,
    Duplicate,
    Kind,
    Opened,
    OpenError,
    OpeningKey,
    Reason,
    SigningKey,
    SuiteId,
    WireError,
    open_envelope,
    unseal,
)
from common.wire.header import Header, decode_header
from tests.wire_fixtures import DEVICE, SITE, SUMMARY, World, header_len, make_world

SUITES = [SuiteId.MLKEM768_X25519, SuiteId.X25519]


def open_(world: World, data: bytes) -> Opened | Duplicate:
    return open_envelope(data, devices=world.directory, keyring=world.ring, replay=world.replay)


def reason_of(world: World, data: bytes) -> Reason:
    with pytest.raises(OpenError) as info:
        open_(world, data)
    return info.value.reason


@pytest.mark.parametrize("suite", SUITES)
def test_round_trip_each_suite(suite: SuiteId) -> None:
    world = make_world(suite)
    envelope = world.seal(seq=7)
    opened = open_(world, envelope)
    assert isinstance(opened, Opened)
    assert opened.payload == SUMMARY
    assert opened.header.site == SITE and opened.header.device == DEVICE
    assert opened.header.seq == 7 and opened.header.suite is suite
    assert opened.header.kind is Kind.SUMMARY


@pytest.mark.parametrize("suite", SUITES)
def test_unseal_with_known_signer(suite: SuiteId) -> None:
    world = make_world(suite)
    opened = unseal(world.seal(), signer=world.device.verify_key, key=world.hub, kind=Kind.SUMMARY)
    assert opened.payload == SUMMARY


def test_header_encoding_is_canonical() -> None:
    header = Header(Kind.EVENT, SuiteId.X25519, SITE, DEVICE, 5, 1234, b"\x01" * 8)
    raw = header.encode()
    again, length = decode_header(raw + b"rest")
    assert again == header and length == len(raw)
    assert again.encode() == raw


def expected_reason(offset: int, hlen: int, total: int) -> set[Reason]:
    """Which reasons a flipped byte at `offset` may legitimately produce."""
    if offset < hlen:
        # Header bytes: either it no longer parses, names another device or key, or the
        # signature over it fails.
        return {Reason.MALFORMED, Reason.UNKNOWN_DEVICE, Reason.BAD_SIGNATURE, Reason.WRONG_KEY}
    return {Reason.BAD_SIGNATURE}  # ciphertext and signature are covered by the signature


@pytest.mark.parametrize("suite", SUITES)
def test_every_single_byte_flip_is_rejected(suite: SuiteId) -> None:
    world = make_world(suite)
    envelope = world.seal()
    hlen = header_len(envelope)
    for offset in range(len(envelope)):
        tampered = bytearray(envelope)
        tampered[offset] ^= 0x01
        reason = reason_of(world, bytes(tampered))
        assert reason in expected_reason(offset, hlen, len(envelope)), (offset, reason)


def test_signature_is_checked_before_decrypting() -> None:
    world = make_world()
    envelope = bytearray(world.seal())
    envelope[header_len(bytes(envelope)) + 3] ^= 0xFF  # ciphertext byte
    assert reason_of(world, bytes(envelope)) is Reason.BAD_SIGNATURE


def test_wrong_hub_key() -> None:
    world = make_world()
    other = OpeningKey.generate()
    world.ring.keys = [other]
    assert reason_of(world, world.seal()) is Reason.WRONG_KEY


def test_rotated_key_still_decrypts() -> None:
    world = make_world()
    old_envelope = world.seal(seq=1)
    world.ring.keys.append(OpeningKey.generate())  # rotation: a new current key, old kept
    assert isinstance(open_(world, old_envelope), Opened)


def test_decrypt_failed_when_key_id_matches_but_key_differs() -> None:
    world = make_world(SuiteId.X25519)
    impostor = OpeningKey.generate(SuiteId.X25519)

    class SameIdRing:
        def opening_key(self, key_id: bytes) -> OpeningKey | None:
            return impostor if key_id == world.hub.key_id else None

    with pytest.raises(OpenError) as info:
        open_envelope(
            world.seal(), devices=world.directory, keyring=SameIdRing(), replay=world.replay
        )
    # The guard compares the key id with the key it got: a lying keyring is a wrong key.
    assert info.value.reason in (Reason.WRONG_KEY, Reason.DECRYPT_FAILED)


def test_unknown_and_revoked_devices() -> None:
    world = make_world()
    assert reason_of(world, world.seal(device="lt-999")) is Reason.UNKNOWN_DEVICE
    world.directory.records[(SITE, DEVICE)] = DeviceRecord(world.device.verify_key, revoked=True)
    assert reason_of(world, world.seal()) is Reason.REVOKED


def test_forged_by_another_device_key() -> None:
    world = make_world()
    world.device = SigningKey.generate()  # an attacker's key claiming to be lt-042
    assert reason_of(world, world.seal()) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("cut", [0, 1, 10, 31, 40, 100, -64, -1])
def test_truncated_input(cut: int) -> None:
    world = make_world()
    envelope = world.seal()
    assert reason_of(world, envelope[:cut]) in {Reason.MALFORMED, Reason.BAD_SIGNATURE}


def test_oversized_input_is_refused_before_parsing() -> None:
    world = make_world()
    assert reason_of(world, b"HW" + b"\x00" * MAX_ENVELOPE) is Reason.TOO_LARGE


def test_sealing_an_oversized_document_is_refused() -> None:
    world = make_world()
    big = dict(SUMMARY, blocked=[{"name": "x" * 250, "category": "c", "count": 1}] * 1200)
    with pytest.raises(WireError):
        world.seal(doc=big)


def test_duplicate_is_an_idempotent_no_op() -> None:
    world = make_world()
    envelope = world.seal(seq=3)
    first = open_(world, envelope)
    assert isinstance(first, Opened)
    world.replay.accept(first.header, first.digest)
    again = open_(world, envelope)
    assert isinstance(again, Duplicate) and again.digest == first.digest


def test_same_seq_different_envelope_is_a_replay() -> None:
    world = make_world()
    first = open_(world, world.seal(seq=3))
    assert isinstance(first, Opened)
    world.replay.accept(first.header, first.digest)
    # Re-sealing gives fresh HPKE randomness: a different envelope under a used number.
    assert reason_of(world, world.seal(seq=3)) is Reason.REPLAY


def test_old_unseen_sequence_is_a_replay() -> None:
    world = make_world()
    old = world.seal(seq=5)
    latest = open_(world, world.seal(seq=500))
    assert isinstance(latest, Opened)
    world.replay.accept(latest.header, latest.digest)
    assert reason_of(world, old) is Reason.REPLAY  # 5 <= 500 - window(100)


def test_out_of_order_within_window_is_accepted() -> None:
    world = make_world()
    latest = open_(world, world.seal(seq=50))
    assert isinstance(latest, Opened)
    world.replay.accept(latest.header, latest.digest)
    assert isinstance(open_(world, world.seal(seq=49)), Opened)


@pytest.mark.parametrize(
    "doc",
    [
        {**SUMMARY, "v": 2},
        {**SUMMARY, "extra": 1},
        {k: v for k, v in SUMMARY.items() if k != "client"},
        {**SUMMARY, "counts": {"blocked": -1}},
        {**SUMMARY, "counts": {"blocked": True}},
        {**SUMMARY, "source": "other"},
    ],
)
def test_schema_violations_cannot_be_sealed(doc: dict[str, object]) -> None:
    world = make_world()
    with pytest.raises(WireError):
        world.seal(doc=doc)


def test_schema_violation_from_a_third_party_is_rejected() -> None:
    """A device that skips our encoder still meets the schema check on the hub."""
    from common.wire.header import Header as H

    world = make_world(SuiteId.X25519)
    header = H(Kind.SUMMARY, SuiteId.X25519, SITE, DEVICE, 1, 0, world.hub.key_id).encode()
    for body in [b'{"v":1}', b"not json", b'{"v":1,"v":1}', b"[1,2]", b'{"v":NaN}', b"\xff\xfe"]:
        ct = world.hub.public_key.seal(body, info=header)
        envelope = header + ct + world.device.sign(header + ct)
        assert reason_of(world, envelope) is Reason.SCHEMA, body


def test_policy_kind_is_not_a_device_report() -> None:
    world = make_world()
    from common.wire import sign_message

    hub_signer = SigningKey.generate()
    msg = sign_message(
        {"v": 1, "site": SITE}, site=SITE, device=DEVICE, version=1, time_ms=0, signer=hub_signer
    )
    assert reason_of(world, msg) is Reason.MALFORMED
