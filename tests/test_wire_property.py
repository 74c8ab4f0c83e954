"""Property tests: valid envelopes, signed messages and payloads (generated) open to exactly what
was sealed; whatever else arrives (random bytes, mutations, truncations) raises only OpenError.

Each test checks both halves, so a decoder that rejected everything would fail here as surely as
one that let something else escape."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import (
    DeviceRecord,
    Opened,
    OpenError,
    OpeningKey,
    ReplayWindow,
    SignedMessage,
    SigningKey,
    SuiteId,
    open_envelope,
    open_signed,
    seal,
    sign_message,
)
from common.wire.header import MAX_U63, Kind
from common.wire.payload import decode, encode
from common.wire.replay import MAX_JUMP
from tests.wire_fixtures import DEVICE, SITE, Directory, Ring, header_len

# One hub key per suite, and a few enrolled devices each with its own signing key. Nothing here
# keeps state between examples: every open gets a fresh replay window.
HUB_KEYS = {
    suite: OpeningKey.generate(suite) for suite in (SuiteId.X25519, SuiteId.MLKEM768_X25519)
}
DEVICES = {name: SigningKey.generate() for name in (DEVICE, "dns-1", "lt-7.b_c")}
DIRECTORY = Directory({(SITE, name): DeviceRecord(key.verify_key) for name, key in DEVICES.items()})
RING = Ring(list(HUB_KEYS.values()))
HUB_SIGNER = SigningKey.generate()


def open_(data: bytes) -> Opened:
    """Open as the hub does; a valid envelope must come out Opened (never a Duplicate: the
    replay window is new)."""
    result = open_envelope(data, devices=DIRECTORY, keyring=RING, replay=ReplayWindow())
    assert isinstance(result, Opened)
    return result


def only_open_error(data: bytes) -> Opened | None:
    """Open `data`; None if it raised OpenError (anything else escaping fails the test)."""
    try:
        return open_(data)
    except OpenError:
        return None


def refused(attempt: Callable[[], object]) -> bool:
    """True if `attempt` raised OpenError; False if it returned (anything else escapes)."""
    try:
        attempt()
    except OpenError:
        return True
    return False


# Valid documents for each device kind, within the schema's limits (common/wire/payload.py):
# strings without control or bidirectional-override characters, integers 0..2^63-1, addresses
# as addresses, DNS names in presentation format (printable ASCII).
counts = st.integers(0, 2**63 - 1)
letters = st.characters(categories=("L", "M", "N", "P", "S", "Zs"))
short = st.text(letters, max_size=12)


def text(limit: int) -> st.SearchStrategy[str]:
    """Strings the schema allows (at most `limit` characters): usually short, sometimes full."""
    return short | st.text(letters, min_size=limit, max_size=limit)


ids = st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,62}", fullmatch=True)  # group, category, type
presentation = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
dns_names = st.text(presentation, max_size=30) | st.text(presentation, min_size=255, max_size=255)
ips = st.ip_addresses().map(str)
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda octets: ":".join(f"{octet:02x}" for octet in octets)
)


clients = st.fixed_dictionaries(
    {"ip": ips, "group": ids},
    optional={"mac": macs, "user": text(255), "hostname": text(255)},
)
summaries = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "source": st.sampled_from(["dns", "agent"]),
        "start": counts,
        "end": counts,
        "client": clients,
        "counts": st.dictionaries(ids, counts, max_size=4),
        "categories": st.dictionaries(ids, counts, max_size=4),
        "blocked": st.lists(
            st.fixed_dictionaries({"name": dns_names, "category": ids, "count": counts}),
            max_size=4,
        ),
        "first_seen": counts,
        "last_seen": counts,
    },
    optional={
        "top_allowed": st.lists(
            st.fixed_dictionaries({"domain": dns_names, "count": counts}), max_size=4
        ),
        "location": st.sampled_from(["onsite", "offsite", "unknown"]),
        "policy_version": counts,
        "counts_only": st.booleans(),
    },
)
scalars = st.text(letters, max_size=40) | counts | st.booleans()
events = st.fixed_dictionaries(
    {"v": st.just(1), "type": ids, "at": counts},
    optional={
        "category": ids,
        "name": dns_names,
        "client": clients,
        "count": counts,
        "detail": st.dictionaries(short, scalars, max_size=4),
    },
)
heartbeats = st.fixed_dictionaries(
    {"v": st.just(1), "uptime_s": counts, "policy_version": counts},
    optional={
        "location": st.sampled_from(["onsite", "offsite", "unknown"]),
        "clean_stop": st.booleans(),
        "filter_active": st.booleans(),
        "resolver": text(255),
        "software": text(63),
    },
)
documents = st.one_of(
    st.tuples(st.just(Kind.SUMMARY), summaries),
    st.tuples(st.just(Kind.EVENT), events),
    st.tuples(st.just(Kind.HEARTBEAT), heartbeats),
)


@dataclass(frozen=True)
class Sealed:
    """A valid envelope and what it must open to."""

    data: bytes
    kind: Kind
    document: dict[str, Any]
    device: str
    seq: int
    time_ms: int
    suite: SuiteId

    def check(self, opened: Opened) -> None:
        """`opened` is this envelope, payload and header."""
        assert opened.payload == self.document
        header = opened.header
        assert (header.kind, header.suite) == (self.kind, self.suite)
        assert (header.site, header.device) == (SITE, self.device)
        assert (header.seq, header.time_ms) == (self.seq, self.time_ms)


@st.composite
def envelopes(draw: st.DrawFn) -> Sealed:
    """Valid envelopes: any device kind and document, device, suite, seq and time."""
    kind, document = draw(documents)
    device = draw(st.sampled_from(sorted(DEVICES)))
    suite = draw(st.sampled_from(sorted(HUB_KEYS)))
    seq = draw(st.integers(1, MAX_JUMP))  # a fresh replay window accepts 1..2^20
    time_ms = draw(st.integers(0, MAX_U63))
    data = seal(
        kind,
        document,
        site=SITE,
        device=device,
        seq=seq,
        time_ms=time_ms,
        to=HUB_KEYS[suite].public_key,
        signer=DEVICES[device],
    )
    return Sealed(data, kind, document, device, seq, time_ms, suite)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(envelopes(), st.binary(max_size=600))
def test_valid_envelopes_open_and_random_bytes_raise_only_open_error(
    sealed: Sealed, data: bytes
) -> None:
    sealed.check(open_(sealed.data))
    assert only_open_error(data) is None
    assert only_open_error(b"HW\x01" + data) is None
    # A valid header followed by anything else is refused too.
    glued = sealed.data[: header_len(sealed.data)] + data
    if glued != sealed.data:
        assert only_open_error(glued) is None


@FUZZ
@given(
    envelopes(),
    st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=8),
    st.integers(0, 2**20),
)
def test_mutations_of_a_valid_envelope_raise_only_open_error(
    sealed: Sealed, edits: list[tuple[int, int]], cut: int
) -> None:
    sealed.check(open_(sealed.data))
    data = bytearray(sealed.data)
    for offset, value in edits:
        data[offset % len(data)] = value
    keep = cut % (len(data) + 1)  # 0: the whole envelope, else the first `keep` bytes
    mutated = bytes(data[:keep] if keep else data)
    opened = only_open_error(mutated)
    if mutated == sealed.data:  # the edits put back what was there: still the same envelope
        assert opened is not None
        sealed.check(opened)
    else:  # every byte is signed (and the body sealed): any change is refused
        assert opened is None


policies = st.fixed_dictionaries(
    {"v": st.just(1), "site": ids},
    optional={
        "document": st.dictionaries(
            short,
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False)
                | short,
                lambda children: (
                    st.lists(children, max_size=3) | st.dictionaries(short, children, max_size=3)
                ),
                max_leaves=10,
            ),
            max_size=6,
        )
    },
)


@FUZZ
@given(
    policies,
    st.sampled_from([DEVICE, ""]),
    st.integers(1, MAX_U63),
    st.integers(0, MAX_U63),
    st.binary(max_size=300),
    st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_signed_messages_open_and_anything_else_raises_only_open_error(
    document: dict[str, Any],
    device: str,
    version: int,
    time_ms: int,
    data: bytes,
    edits: list[tuple[int, int]],
) -> None:
    message = sign_message(
        document, site=SITE, device=device, version=version, time_ms=time_ms, signer=HUB_SIGNER
    )

    def open_message(raw: bytes, min_version: int = 0) -> SignedMessage:
        return open_signed(
            raw, hub_keys=[HUB_SIGNER.verify_key], site=SITE, device=DEVICE, min_version=min_version
        )

    opened = open_message(message, min_version=version)
    assert opened.payload == document and opened.version == version
    assert (opened.header.site, opened.header.device) == (SITE, device)
    # A newer version required, garbage, a byte changed: OpenError and nothing else.
    assert refused(lambda: open_message(message, min_version=version + 1))
    assert refused(lambda: open_message(b"HW\x01\x05\x00\x00" + data))
    assert refused(lambda: open_message(message[: len(message) // 2] + data))
    mutated = bytearray(message)
    for offset, value in edits:
        mutated[offset % len(mutated)] = value
    if bytes(mutated) != message:
        assert refused(lambda: open_message(bytes(mutated)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(documents, json_values, st.sampled_from(list(Kind)))
def test_payloads_round_trip_and_other_json_raises_only_open_error(
    valid: tuple[Kind, dict[str, Any]], value: object, kind: Kind
) -> None:
    valid_kind, document = valid
    assert decode(valid_kind, encode(valid_kind, document)) == document
    with contextlib.suppress(OpenError):
        decode(kind, json.dumps(value).encode())
