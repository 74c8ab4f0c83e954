"""One envelope must not silence a device: a seq far beyond the highest accepted is refused as
`replay` (which the hub's security rule counts), and seq and time stay within 2^63-1."""

from __future__ import annotations

import pytest

from common.wire import Opened, OpenError, ReplayWindow, SigningKey, open_envelope, seal
from common.wire.errors import WireError
from common.wire.header import MAX_U63, Kind, SuiteId
from common.wire.replay import MAX_JUMP
from common.wire.suites import OpeningKey
from tests.wire_fixtures import Directory, Ring

SITE, DEVICE = "cape", "lt-1"


def _world() -> tuple[SigningKey, OpeningKey, Directory, Ring]:
    from common.wire import DeviceRecord

    key = SigningKey.generate()
    hub = OpeningKey.generate(SuiteId.X25519)
    return key, hub, Directory({(SITE, DEVICE): DeviceRecord(key.verify_key)}), Ring([hub])


def _event(key: SigningKey, hub: OpeningKey, seq: int) -> bytes:
    return seal(
        Kind.EVENT,
        {"v": 1, "type": "blocked", "at": 1},
        site=SITE, device=DEVICE, seq=seq, time_ms=1, to=hub.public_key, signer=key,
    )  # fmt: skip


def test_a_far_jump_is_a_replay_and_the_device_keeps_reporting() -> None:
    key, hub, directory, ring = _world()
    window = ReplayWindow()

    def open_(seq: int) -> None:
        opened = open_envelope(_event(key, hub, seq), devices=directory, keyring=ring, replay=window)
        assert isinstance(opened, Opened)
        window.accept(opened.header, opened.digest)

    open_(1)
    with pytest.raises(OpenError, match=r"replay: seq \d+ jumps more than 2\^20"):
        open_(MAX_U63)
    with pytest.raises(OpenError, match="replay"):
        open_(1 + MAX_JUMP + 1)
    open_(2)  # the genuine next report still opens
    open_(2 + MAX_JUMP)  # a jump up to 2^20 is allowed (crashes skip reserved blocks)


def test_a_first_envelope_cannot_start_beyond_the_jump() -> None:
    key, hub, directory, ring = _world()
    with pytest.raises(OpenError, match="replay"):
        open_envelope(
            _event(key, hub, MAX_JUMP + 1), devices=directory, keyring=ring, replay=ReplayWindow()
        )


@pytest.mark.parametrize("seq", [MAX_U63 + 1, 2**64 - 1])
def test_seq_beyond_2_63_cannot_be_sealed(seq: int) -> None:
    key, hub, _, _ = _world()
    with pytest.raises(WireError, match=r"outside 1\.\.2\^63-1"):
        _event(key, hub, seq)
