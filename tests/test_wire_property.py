"""Property tests: whatever bytes arrive, opening raises only OpenError."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import Duplicate, Opened, OpenError, SuiteId, open_envelope, open_signed
from common.wire.header import Kind
from common.wire.payload import decode
from tests.wire_fixtures import DEVICE, SITE, make_world

WORLD = make_world(SuiteId.X25519)
GOOD = WORLD.seal(seq=1)


def try_open(data: bytes) -> None:
    try:
        result = open_envelope(
            data, devices=WORLD.directory, keyring=WORLD.ring, replay=WORLD.replay
        )
        assert isinstance(result, Opened | Duplicate)
    except OpenError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    try_open(data)
    try_open(b"HW\x01" + data)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(GOOD)),
)
def test_mutations_of_a_good_envelope(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(GOOD)
    for offset, value in edits:
        data[offset] = value
    try_open(bytes(data[:cut] if cut else data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_signed_messages(data: bytes) -> None:
    with contextlib.suppress(OpenError):
        open_signed(
            b"HW\x01\x05\x00\x00" + data,
            hub_keys=[WORLD.device.verify_key],
            site=SITE,
            device=DEVICE,
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(list(Kind)))
def test_payload_decoder_only_raises_open_error(value: object, kind: Kind) -> None:
    import json

    with contextlib.suppress(OpenError):
        decode(kind, json.dumps(value).encode())
