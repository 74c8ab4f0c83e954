"""Seal and open rates on one core, against the bare cryptography primitives in the same run.

    .venv/bin/python bench/wire.py [--seconds 2]

The hub's ingest budget is built on the open rate: opening = Ed25519 verify + HPKE open +
JSON parse and schema check, so the ratio to the bare primitives shows our overhead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.wire import (
    DeviceRecord,
    Kind,
    OpeningKey,
    ReplayWindow,
    SigningKey,
    SuiteId,
    open_envelope,
    seal,
)
from common.wire.header import decode_header
from tests.wire_fixtures import DEVICE, SITE, SUMMARY, Directory, Ring


def rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls per second of fn(i) over about `seconds`."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def bench_suite(suite: SuiteId, seconds: float) -> dict[str, float]:
    """Rates for one suite: ours and the bare primitives."""
    hub = OpeningKey.generate(suite)
    device = SigningKey.generate()
    directory = Directory({(SITE, DEVICE): DeviceRecord(device.verify_key)})
    ring = Ring([hub])
    envelopes = [
        seal(
            Kind.SUMMARY,
            SUMMARY,
            site=SITE,
            device=DEVICE,
            seq=i + 1,
            time_ms=0,
            to=hub.public_key,
            signer=device,
        )
        for i in range(2000)
    ]
    replay = ReplayWindow(window=10**9)

    def do_seal(i: int) -> object:
        return seal(
            Kind.SUMMARY,
            SUMMARY,
            site=SITE,
            device=DEVICE,
            seq=i + 1,
            time_ms=0,
            to=hub.public_key,
            signer=device,
        )

    def do_open(i: int) -> object:
        return open_envelope(
            envelopes[i % len(envelopes)], devices=directory, keyring=ring, replay=replay
        )

    # The bare primitives on the same bytes: Ed25519 verify + HPKE open, nothing else.
    sample = envelopes[0]
    _, hlen = decode_header(sample)
    header, ct, sig = sample[:hlen], sample[hlen:-64], sample[-64:]
    body = SUMMARY.__repr__().encode()
    verify = device.verify_key

    def bare_open(_: int) -> object:
        verify.verify(sig, header + ct)
        return hub.open(ct, info=header)

    def bare_seal(_: int) -> object:
        c = hub.public_key.seal(body, info=header)
        return device.sign(header + c)

    return {
        "seal": rate(do_seal, seconds),
        "bare_seal": rate(bare_seal, seconds),
        "open": rate(do_open, seconds),
        "bare_open": rate(bare_open, seconds),
        "size": float(len(sample)),
    }


def main() -> None:
    """Print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(
        "| suite | envelope bytes | seal/s | bare seal/s | seal ratio | open/s | bare open/s | open ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for suite in (SuiteId.MLKEM768_X25519, SuiteId.X25519):
        r = bench_suite(suite, args.seconds)
        print(
            f"| {suite.name} | {r['size']:.0f} | {r['seal']:,.0f} | {r['bare_seal']:,.0f} | "
            f"{r['seal'] / r['bare_seal']:.2f} | {r['open']:,.0f} | {r['bare_open']:,.0f} | "
            f"{r['open'] / r['bare_open']:.2f} |"
        )


if __name__ == "__main__":
    main()
