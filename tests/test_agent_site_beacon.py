"""The laptop's beacon probe against a real `hedgerow-dns serve` and against small real UDP
responders on loopback that forge, replay, delay, stay silent or send garbage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.filter import packet, replies
from agent.laptop.site.beacon import BeaconOutcome, BeaconProber, SiteState, server_text
from common.beacon_statement import NONCE, make_statement, nonce_of
from common.identity import Identity, MqttCredentials
from common.wire.header import SuiteId
from common.wire.signing import SigningKey
from common.wire.suites import OpeningKey
from tests.dns_support import FakeUpstream, ask, free_dns_port, write_config
from tests.services import free_port, stop_process

SITE = "cape-primary"
CLI = [sys.executable, "-m", "agent.dns.cli"]
Server = tuple[str, int]


# --- a real hedgerow-dns with the site's beacon key ----------------------------------------


@dataclass
class BeaconDns:
    """A running `hedgerow-dns serve` answering beacon queries for SITE."""

    server: Server
    key: SigningKey


def _identity(directory: Path) -> SigningKey:
    beacon_key = SigningKey.generate()
    Identity(
        site=SITE,
        device="pi-1",
        device_class="sinkhole",
        group=None,
        key=SigningKey.generate(),
        hub_key=OpeningKey.generate(SuiteId.X25519).public_key,
        hub_verify_keys=(SigningKey.generate().verify_key,),
        mqtt=MqttCredentials(url="mqtt://127.0.0.1:1883"),
        beacon_key=beacon_key,
    ).save(directory)
    return beacon_key


@pytest.fixture(scope="module")
def beacon_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeaconDns]:
    """hedgerow-dns serve as a process on a loopback high port, with [beacon] configured."""
    directory = tmp_path_factory.mktemp("beacon-dns")
    key = _identity(directory / "identity")
    extra = f'[beacon]\nsite = "{SITE}"\nidentity = "{directory / "identity"}"\n'
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(directory, [upstream.address], port, extra=extra)
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ready = threading.Event()
        lines: list[bytes] = []

        def drain() -> None:  # keep reading stderr so the server never blocks on a full pipe
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if b"ready" in line:
                    ready.set()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            if not ready.wait(60):
                raise RuntimeError(f"hedgerow-dns did not start: {b''.join(lines)!r}")
            yield BeaconDns(("127.0.0.1", port), key)
        finally:
            stop_process(proc)
            reader.join(10)
            if proc.stderr is not None:
                proc.stderr.close()


# --- small real responders ----------------------------------------------------------------

Answer = Callable[[packet.Query], list[bytes]]


@dataclass
class Responder:
    """A UDP server on 127.0.0.1 in a thread: `answer` turns each query into the datagrams to
    send back (none: silent), after `delay_s`; `other_port` sends them from another socket."""

    answer: Answer
    delay_s: float = 0.0
    other_port: bool = False
    qnames: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Responder:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.server: Server = ("127.0.0.1", int(self.sock.getsockname()[1]))
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
        self.sender.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, peer = self.sock.recvfrom(65535)
            query = packet.parse_query(data)
            self.qnames.append(query.qname)
            replies = self.answer(query)
            if replies and self.delay_s:
                self._stop.wait(self.delay_s)  # the relay's extra round trip
            out = self.sender if self.other_port else self.sock
            for reply in replies:
                out.sendto(reply, peer)


def now_ms() -> int:
    return int(time.time() * 1000)


def txt_reply(query: packet.Query, text: bytes) -> bytes:
    """A NOERROR reply with one TXT record holding `text` as one character-string."""
    return packet.answer(query, (bytes([len(text)]) + text,), 0)


def signed_by(key: SigningKey, *, site: str = SITE, age_ms: int = 0) -> Answer:
    """Answers each beacon query with a statement for its own nonce."""

    def answer(query: packet.Query) -> list[bytes]:
        nonce = nonce_of(query.qname)
        assert nonce is not None, query.qname
        return [txt_reply(query, make_statement(key, site, nonce, now_ms() - age_ms))]

    return answer


def replaying(statement: bytes) -> Answer:
    """Answers every query with a statement recorded earlier, for another nonce."""
    return lambda query: [txt_reply(query, statement)]


def silent(query: packet.Query) -> list[bytes]:
    return []


def probe(prober: BeaconProber, servers: list[Server], *, timeout: float = 10.0) -> BeaconOutcome:
    """One probe on a fresh event loop, which must end within `timeout` (liveness only)."""

    async def run() -> BeaconOutcome:
        return await asyncio.wait_for(prober.probe(servers), timeout)

    return asyncio.run(run())


# --- on site: the real thing --------------------------------------------------------------


def test_real_hedgerow_dns_proves_on_site(beacon_dns: BeaconDns) -> None:
    prober = BeaconProber(SITE, [beacon_dns.key.verify_key])
    outcome = probe(prober, [beacon_dns.server])
    assert outcome.on_site and outcome.reason == "signed", outcome
    assert outcome.server == f"127.0.0.1:{beacon_dns.server[1]}"
    assert outcome.rtt_ms is not None and 0 <= outcome.rtt_ms <= 50.0


def test_real_server_with_another_sites_key_is_wrong_key(beacon_dns: BeaconDns) -> None:
    prober = BeaconProber(SITE, [SigningKey.generate().verify_key], timeout_s=0.3)
    outcome = probe(prober, [beacon_dns.server])
    assert not outcome.on_site and outcome.reason == "wrong_key", outcome


def test_real_server_for_another_site_is_not_ours(beacon_dns: BeaconDns) -> None:
    prober = BeaconProber("other-school", [beacon_dns.key.verify_key], timeout_s=0.3)
    outcome = probe(prober, [beacon_dns.server])
    assert not outcome.on_site and outcome.reason == "wrong_key", outcome


def test_first_valid_server_wins_among_bad_ones(beacon_dns: BeaconDns) -> None:
    forger = SigningKey.generate()
    with Responder(silent) as quiet, Responder(signed_by(forger)) as forged:
        prober = BeaconProber(SITE, [beacon_dns.key.verify_key])
        outcome = probe(prober, [quiet.server, forged.server, beacon_dns.server])
    assert outcome.on_site and outcome.server == server_text(*beacon_dns.server), outcome


# --- off site: each way a beacon answer fails -----------------------------------------------


def test_statement_signed_by_another_key_is_wrong_key() -> None:
    site_key = SigningKey.generate()
    with Responder(signed_by(SigningKey.generate())) as forged:
        prober = BeaconProber(SITE, [site_key.verify_key], timeout_s=0.3)
        outcome = probe(prober, [forged.server])
    assert outcome == BeaconOutcome(False, "wrong_key", None, outcome.rtt_ms)
    assert outcome.rtt_ms is not None


def test_replayed_statement_for_an_earlier_nonce_is_wrong_nonce(beacon_dns: BeaconDns) -> None:
    # A genuine answer of the school's server, recorded for one nonce, then replayed.
    port = beacon_dns.server[1]
    recorded = ask(port, "0123456789abcdef0123.beacon.hedgerow.internal", "TXT")
    statement = b"".join(recorded.rr[0].rdata.data)
    with Responder(replaying(statement)) as replayer:
        prober = BeaconProber(SITE, [beacon_dns.key.verify_key], timeout_s=0.3)
        outcome = probe(prober, [replayer.server])
    assert not outcome.on_site and outcome.reason == "wrong_nonce", outcome


def test_old_statement_is_stale() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key, age_ms=60_000)) as old:
        prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.3)
        outcome = probe(prober, [old.server])
    assert not outcome.on_site and outcome.reason == "stale", outcome


def test_statement_from_the_future_is_stale() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key, age_ms=-45_000)) as ahead:
        prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.3)
        assert probe(prober, [ahead.server]).reason == "stale"


def test_the_clock_window_is_the_provers_own() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key)) as fresh:
        later = BeaconProber(SITE, [key.verify_key], clock=lambda: time.time() + 120)
        assert probe(later, [fresh.server]).reason == "stale"
        wide = BeaconProber(
            SITE, [key.verify_key], clock=lambda: time.time() + 120, clock_window_ms=300_000
        )
        assert probe(wide, [fresh.server]).on_site


def test_valid_but_slow_answer_is_a_relay_so_off_site() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key), delay_s=0.12) as relay:
        prober = BeaconProber(SITE, [key.verify_key], max_rtt_ms=50.0, timeout_s=2.0)
        outcome = probe(prober, [relay.server])
    assert not outcome.on_site and outcome.reason == "slow", outcome
    assert outcome.rtt_ms is not None and outcome.rtt_ms >= 120.0
    assert outcome.server is None  # it proved nothing


def test_silent_server_is_no_answer() -> None:
    key = SigningKey.generate()
    with Responder(silent) as quiet:
        prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.3)
        outcome = probe(prober, [quiet.server])
        assert quiet.qnames and NONCE.fullmatch(quiet.qnames[0].split(".")[0])
    assert outcome == BeaconOutcome(False, "no_answer", None, None)


def test_closed_port_icmp_unreachable_is_no_answer() -> None:
    key = SigningKey.generate()
    # Long timeout: the ICMP error ends the wait, and wait_for's 10 s bound would catch a hang.
    prober = BeaconProber(SITE, [key.verify_key], timeout_s=5.0)
    outcome = probe(prober, [("127.0.0.1", free_port(socket.SOCK_DGRAM))], timeout=4.0)
    assert outcome == BeaconOutcome(False, "no_answer", None, None)


def test_answer_from_another_port_is_ignored() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key), other_port=True) as elsewhere:
        prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.3)
        outcome = probe(prober, [elsewhere.server])
        assert elsewhere.qnames  # it was asked, and its valid answer came from elsewhere
    assert outcome.reason == "no_answer" and not outcome.on_site


def test_nxdomain_and_plain_txt_are_unsigned() -> None:
    key = SigningKey.generate()

    def home_router(query: packet.Query) -> list[bytes]:
        return [packet.error(query, packet.NXDOMAIN)]

    def chatty(query: packet.Query) -> list[bytes]:
        return [txt_reply(query, b"v=spf1 -all")]

    def unsigned(query: packet.Query) -> list[bytes]:
        nonce = nonce_of(query.qname)
        return [txt_reply(query, f"hedgerow-beacon=1;{SITE};{nonce};{now_ms()};".encode())]

    for answer in (home_router, chatty, unsigned):
        with Responder(answer) as server:
            prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.3)
            outcome = probe(prober, [server.server])
        assert not outcome.on_site and outcome.reason == "unsigned", (answer, outcome)


def _garbage(query: packet.Query) -> list[bytes]:
    """Everything a broken or hostile server might send, none of it a proof."""
    good = txt_reply(replace(query, edns=False), b"x" * 40)  # no OPT: the TXT record is last
    msg_id = good[:2]
    return [
        os.urandom(300),
        b"",
        b"\x00",
        msg_id,  # the right ID and nothing else
        good[:20],  # truncated inside the question
        good[: len(good) - 10],  # truncated inside the TXT record
        msg_id + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + os.urandom(64),
        packet.with_id(good, (int.from_bytes(msg_id, "big") + 1) & 0xFFFF),  # another ID
        good[:-41] + b"\xff" + good[-40:],  # TXT length byte beyond the record
    ]


def test_garbage_never_raises_and_is_not_on_site() -> None:
    key = SigningKey.generate()
    with Responder(_garbage) as noisy:
        prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.3)
        outcomes = [probe(prober, [noisy.server]) for _ in range(5)]
    for outcome in outcomes:
        assert not outcome.on_site and outcome.reason in ("malformed", "unsigned"), outcome


def test_spoofed_bad_answer_racing_the_real_one_does_not_decide() -> None:
    key = SigningKey.generate()
    forged_answer = signed_by(SigningKey.generate())
    real_answer = signed_by(key)

    def spoof_first(query: packet.Query) -> list[bytes]:
        return forged_answer(query) + _garbage(query) + real_answer(query)

    with Responder(spoof_first) as racing:
        prober = BeaconProber(SITE, [key.verify_key])
        outcome = probe(prober, [racing.server])
    assert outcome.on_site, outcome


def test_most_telling_reason_when_none_proves() -> None:
    key = SigningKey.generate()
    with (
        Responder(silent) as quiet,
        Responder(signed_by(SigningKey.generate())) as forged,
        Responder(signed_by(key, age_ms=60_000)) as old,
        Responder(signed_by(key), delay_s=0.12) as relay,
    ):
        prober = BeaconProber(SITE, [key.verify_key], timeout_s=0.4)
        assert probe(prober, [quiet.server, forged.server]).reason == "wrong_key"
        assert probe(prober, [forged.server, old.server]).reason == "stale"
        outcome = probe(prober, [quiet.server, forged.server, old.server, relay.server])
    assert outcome.reason == "slow" and outcome.rtt_ms is not None and outcome.rtt_ms >= 120.0


def test_no_keys_and_no_servers_ask_nobody() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key)) as server:
        assert probe(BeaconProber(SITE, []), [server.server]).reason == "no_keys"
        assert probe(BeaconProber(SITE, [key.verify_key]), []).reason == "no_servers"
        assert server.qnames == []


def test_host_name_or_bad_port_is_never_asked() -> None:
    prober = BeaconProber(SITE, [SigningKey.generate().verify_key], timeout_s=0.3)
    outcome = probe(prober, [("beacon.example", 53), ("not an address", 53), ("127.0.0.1", 70000)])
    assert outcome == BeaconOutcome(False, "no_answer", None, None)


def test_ipv6_loopback() -> None:
    key = SigningKey.generate()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    port = int(sock.getsockname()[1])
    answer = signed_by(key)

    def serve() -> None:
        data, peer = sock.recvfrom(65535)
        for reply in answer(packet.parse_query(data)):
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        outcome = probe(BeaconProber(SITE, [key.verify_key]), [("::1", port)])
    finally:
        thread.join(5)
        sock.close()
    assert outcome.on_site and outcome.server == f"[::1]:{port}"


# --- reading TXT answers (agent/filter/replies.txt_answers) -------------------------------

_QUERY = packet.parse_query(
    packet.query_message(7, "0123456789abcdef.beacon.hedgerow.internal", packet.TXT, 1, False)
)


@given(st.lists(st.binary(max_size=255), min_size=0, max_size=4))
def test_txt_answers_reads_back_what_was_sent(texts: list[bytes]) -> None:
    reply = packet.answer(_QUERY, tuple(bytes([len(t)]) + t for t in texts), 0)
    assert replies.txt_answers(reply) == (0, tuple(texts))


@given(st.binary(max_size=200), st.integers(0, 400))
def test_txt_answers_on_broken_replies_raises_only_packet_error(junk: bytes, cut: int) -> None:
    valid = packet.answer(_QUERY, (b"\x05hello",), 0)
    if cut >= len(valid):
        assert replies.txt_answers(valid[:cut]) == (0, (b"hello",))
    for data in (junk, valid[:cut], valid[:cut] + junk):
        with contextlib.suppress(packet.PacketError):
            replies.txt_answers(data)


# --- nonces -------------------------------------------------------------------------------


def test_nonces_never_repeat_over_1000_probes() -> None:
    key = SigningKey.generate()
    with Responder(signed_by(key)) as server:
        prober = BeaconProber(SITE, [key.verify_key], max_rtt_ms=10_000.0, timeout_s=5.0)

        async def many() -> list[BeaconOutcome]:
            return [await prober.probe([server.server]) for _ in range(1000)]

        outcomes = asyncio.run(many())
        nonces = [name.split(".")[0] for name in server.qnames]
    assert all(outcome.on_site for outcome in outcomes)
    assert len(nonces) == 1000 and len(set(nonces)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", nonce) for nonce in nonces)


def test_a_repeated_draw_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["a" * 32, "a" * 32, "a" * 32, "b" * 32])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(draws))
    prober = BeaconProber(SITE, [SigningKey.generate().verify_key])
    assert [prober.fresh_nonce(), prober.fresh_nonce()] == ["a" * 32, "b" * 32]


def test_site_states_are_the_status_vocabulary() -> None:
    assert [state.value for state in SiteState] == ["on_site", "off_site", "captive", "unknown"]
