"""hedgerow-dns under stress: dead and lying upstreams, floods, malformed packets, reloads,
and the signed beacon. Real sockets throughout."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

import dnslib

from common.beacon_statement import verify_statement
from common.identity import Identity, MqttCredentials
from common.wire.header import SuiteId
from common.wire.signing import SigningKey
from common.wire.suites import OpeningKey
from tests.dns_support import (
    FakeUpstream,
    ask,
    free_dns_port,
    raw,
    running_dns,
    write_config,
)
from tests.waiting import wait_until

PUPIL = "127.0.1.7"
STAFF = "127.0.2.7"


def test_dead_upstream_servfail_in_time_but_blocks_still_answered(tmp_path: Path) -> None:
    with FakeUpstream(mode="silent") as dead:
        path = write_config(tmp_path, [dead.address], free_dns_port(), timeout_ms=300)
        with running_dns(path) as dns:
            reply = ask(dns.port, "example.com", "A", STAFF)  # client timeout 5 s >> 300 ms
            assert dnslib.RCODE.get(reply.header.rcode) == "SERVFAIL"
            assert dead.count("example.com") == 1
            blocked = ask(dns.port, "casino.example", "A", PUPIL)
            assert str(blocked.rr[0].rdata) == "0.0.0.0"


def test_unreachable_upstream_servfail(tmp_path: Path) -> None:
    closed = free_dns_port()  # nothing listens there: ICMP refused, fail fast
    path = write_config(tmp_path, [f"127.0.0.1:{closed}"], free_dns_port(), timeout_ms=500)
    with running_dns(path) as dns:
        assert ask(dns.port, "example.com", "A", STAFF).header.rcode == 2


def test_failover_in_order(tmp_path: Path) -> None:
    with FakeUpstream(mode="silent") as dead, FakeUpstream() as alive:
        path = write_config(tmp_path, [dead.address, alive.address], free_dns_port())
        with running_dns(path) as dns:
            reply = ask(dns.port, "example.com", "A", STAFF)
            assert str(reply.rr[0].rdata) == "192.0.2.1"
            assert dead.count("example.com") == 1 and alive.count("example.com") == 1


def test_servfail_from_upstream_fails_over(tmp_path: Path) -> None:
    with FakeUpstream() as first, FakeUpstream() as second:
        path = write_config(tmp_path, [first.address, second.address], free_dns_port())
        with running_dns(path) as dns:
            assert ask(dns.port, "servfail.example", "A", STAFF).header.rcode == 2
            assert first.count("servfail.example") == 1
            assert second.count("servfail.example") == 1


def test_spoofed_id_ignored(tmp_path: Path) -> None:
    with FakeUpstream(mode="spoof-first") as liar:
        path = write_config(tmp_path, [liar.address], free_dns_port())
        with running_dns(path) as dns:
            reply = ask(dns.port, "example.com", "A", STAFF)
            assert str(reply.rr[0].rdata) == "192.0.2.1"


def test_rate_limit_refuses_and_counts(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port(), rate=5)
        with running_dns(path) as dns:
            codes = [ask(dns.port, "casino.example", "A", PUPIL).header.rcode for _ in range(60)]
            assert codes.count(5) > 0 and codes[0] == 0
            # another client has its own bucket
            assert ask(dns.port, "casino.example", "A", "127.0.1.8").header.rcode == 0
            assert dns.service.metrics is not None
            labels = {"verdict": "refused", "category": "", "group": "pupils"}
            assert dns.service.metrics.value("hedgerow_dns_queries_total", labels) > 0


def _mutations(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    base = [
        dnslib.DNSRecord.question("www.example.com", "A").pack(),
        dnslib.DNSRecord.question("casino.example", "AAAA").pack(),
        (lambda q: (q.add_ar(dnslib.EDNS0(udp_len=4096, flags="do")), q.pack())[1])(
            dnslib.DNSRecord.question("x.bets.example", "HTTPS")
        ),
    ]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            action = rng.random()
            if action < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif action < 0.7 and data:
                del data[rng.randrange(len(data)) :]
            elif action < 0.9:
                data[rng.randrange(len(data) + 1) : 0] = bytes(
                    rng.randrange(256) for _ in range(rng.randint(1, 8))
                )
            else:
                data = bytearray(rng.randbytes(rng.randint(0, 40)))
        out.append(bytes(data))
    return out


def test_fuzz_every_query_answered_and_server_survives(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port(), timeout_ms=300)
        with running_dns(path) as dns:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((PUPIL, 0))
                sock.settimeout(5)
                answered = dropped = 0
                for packet in _mutations(1234, 3000):
                    answerable = len(packet) >= 12 and not packet[2] & 0x80
                    sock.sendto(packet, ("127.0.0.1", dns.port))
                    if not answerable:
                        dropped += 1
                        continue
                    reply = sock.recv(65535)
                    assert reply[:2] == packet[:2] and reply[2] & 0x80
                    answered += 1
            assert answered > 1500
            assert dns.service.server is not None and dns.service.server.dropped == dropped
            # still healthy, over UDP and TCP
            assert str(ask(dns.port, "casino.example", "A", PUPIL).rr[0].rdata) == "0.0.0.0"
            assert ask(dns.port, "example.com", "A", STAFF, tcp=True).rr


def test_tcp_garbage_does_not_hurt(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port())
        with running_dns(path) as dns:
            for packet in _mutations(99, 200):
                if len(packet) < 12 or packet[2] & 0x80:
                    continue
                reply = raw(dns.port, packet, STAFF, tcp=True)
                assert reply[:2] == packet[:2]
            assert ask(dns.port, "example.com", "A", STAFF, tcp=True).rr


def test_reload_loses_no_query_and_bad_config_keeps_old(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        with running_dns(path) as dns:
            stop = threading.Event()
            results: list[int] = []
            failures: list[Exception] = []

            def fire() -> None:
                while not stop.is_set():
                    try:
                        results.append(ask(dns.port, "casino.example", "A", PUPIL).header.rcode)
                    except Exception as exc:
                        failures.append(exc)

            thread = threading.Thread(target=fire)
            thread.start()
            try:
                for _ in range(5):
                    assert dns.call(dns.service.reload) is True
                text = path.read_text()
                path.write_text(text.replace('block = ["adult"]', 'block = ["adult", "nope"]'))
                assert dns.call(dns.service.reload) is False  # refused, old one serves
                (tmp_path / "lists" / "adult.txt").write_text(
                    "0.0.0.0 adult.example\nnew.example\n"
                )
                path.write_text(text)
                server = dns.service.server
                assert server is not None
                retired = server.chain.fast  # answered the load: its memos are full
                assert retired._parsed
                assert dns.call(dns.service.reload) is True
                wait_until(  # emptied a slice at a time between packets
                    lambda: not retired._parsed and not retired._names,
                    10,
                    0.01,
                    "the retired fast path's memos to empty",
                )
            finally:
                stop.set()
                thread.join(30)
            assert not failures and len(results) > 10 and set(results) == {0}
            assert str(ask(dns.port, "new.example", "A", STAFF).rr[0].rdata) == "0.0.0.0"


def _identity(directory: Path, site: str) -> SigningKey:
    beacon_key = SigningKey.generate()
    hub = OpeningKey.generate(SuiteId.X25519)
    Identity(
        site=site,
        device="pi-1",
        device_class="sinkhole",
        group=None,
        key=SigningKey.generate(),
        hub_key=hub.public_key,
        hub_verify_keys=(SigningKey.generate().verify_key,),
        mqtt=MqttCredentials(url="mqtt://127.0.0.1:1883"),
        beacon_key=beacon_key,
    ).save(directory)
    return beacon_key


def test_beacon_signed_statement(tmp_path: Path) -> None:
    key = _identity(tmp_path / "identity", "cape-primary")
    extra = f'[beacon]\nsite = "cape-primary"\nidentity = "{tmp_path / "identity"}"\n'
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port(), extra=extra)
        with running_dns(path) as dns:
            nonce = "a1b2c3d4e5f60718293a"
            reply = ask(dns.port, f"{nonce}.beacon.hedgerow.internal", "TXT", PUPIL)
            txt = b"".join(reply.rr[0].rdata.data)
            statement = verify_statement(
                txt,
                keys=(key.verify_key,),
                site="cape-primary",
                nonce=nonce,
                now_ms=int(__import__("time").time() * 1000),
            )
            assert statement.site == "cape-primary" and reply.rr[0].ttl == 0
            assert not upstream.count(f"{nonce}.beacon.hedgerow.internal")
            bad = ask(dns.port, "UPPER-not-a-nonce.beacon.hedgerow.internal", "TXT", PUPIL)
            assert bad.header.rcode == 3
