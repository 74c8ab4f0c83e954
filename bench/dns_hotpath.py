"""hedgerow-dns hot path: microseconds per query in-process, as a ratio to a bare reference.

    .venv/bin/python bench/dns_hotpath.py [--queries 200000] [--repeat 5] [--domains 100000]
    .venv/bin/python bench/dns_hotpath.py --dnsperf [--seconds 5]
    .venv/bin/python bench/dns_hotpath.py --rss --domains 1000000 [--runs 2] [--school]

In-process: the real server's UDP protocol handles prepared packets one after another; its
transport only counts what would be sent, so the figure is the Python cost of one answer with
no socket in the way. The reference is a bare hand-parse (walk the labels, lower-case, one
dict lookup) plus building a reply, fed the same packets. CPU time (time.process_time, steadier
than wall time on a shared machine), best of --repeat runs. blocked-unique asks every listed
name once (no memo helps); cached-10k cycles through 10,000 cached names.

--rss: memory (VmRSS, VmHWM) and time from process start to the first correct answer of
`hedgerow-dns serve`, once cold (no cache) and --runs times warm (compiled index on disk).
With --school the config also has what a school runs: [report] (to a loopback port where no
broker listens, so it spools), [beacon] with an identity holding a beacon key, and
[server] metrics; without it none of them, so their libraries are never imported.

--dnsperf: real `dnsperf` against `hedgerow-dns serve` and against a bare uvloop server (same
hand-parse, fixed answers) started by this script, three mixes, QPS ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.dns.service import Service  # noqa: E402
from agent.filter import packet  # noqa: E402
from agent.filter.listeners import UdpProtocol  # noqa: E402
from agent.filter.response import parse_response  # noqa: E402

PUPIL = ("127.0.1.5", 40000)
OUTSIDER = ("127.200.0.1", 40000)


class CountingTransport:
    """Stands in for the UDP transport: counts replies and bytes."""

    def __init__(self) -> None:
        self.sent = 0
        self.bytes = 0

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent += 1
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def query(name: str, qtype: int = 1, msg_id: int = 1, edns: bool = False) -> bytes:
    """A query message as stub resolvers send it (RD set)."""
    head = struct.pack("!6H", msg_id, 0x0100, 1, 0, 0, 1 if edns else 0)
    body = packet.question_bytes(name, qtype, 1)
    return head + body + (packet.opt_record(False) if edns else b"")


def write_config(directory: Path, domains: int, port: int, upstream_port: int) -> Path:
    """One blocked category of `domains` generated names, one group for 127.0.1.0/24."""
    rng = random.Random(7)
    names = {f"{rng.getrandbits(40):x}.blocked{i % 97}.example" for i in range(domains)}
    names.add("casino.example")
    (directory / "bench.txt").write_text("\n".join(sorted(names)) + "\n")
    (directory / "iwf.txt").write_text("csam.example\n")
    path = directory / "hedgerow-dns.toml"
    path.write_text(
        f"""[server]
listen = ["127.0.0.1:{port}"]
allow_clients = ["127.0.0.0/9"]
rate_limit_qps = 10000000
list_cache_dir = "{directory / "cache"}"

[upstream]
servers = ["127.0.0.1:{upstream_port}"]

[cache]
max_entries = 20000  # room for the cached-10k mix

[[lists]]
category = "gambling"
source = "{directory / "bench.txt"}"
[[lists]]
category = "iwf"
source = "{directory / "iwf.txt"}"
statutory = true

[groups.pupils]
clients = ["127.0.1.0/24"]
block = ["gambling"]
allow = ["bbc.co.uk"]

[default]
group = "pupils"
"""
    )
    return path


def listed_names(directory: Path, count: int) -> list[tuple[int, str]]:
    """Up to `count` distinct names from the generated list, numbered, in a fixed shuffle."""
    names = (directory / "bench.txt").read_text().split()[:count]
    random.Random(11).shuffle(names)
    return list(enumerate(names))


def _cached_answer(name: str) -> bytes:
    head = struct.pack("!6H", 0, 0x8180, 1, 1, 0, 0)
    rr = packet.rr(packet.A, 300, bytes([192, 0, 2, 1]))
    return head + packet.question_bytes(name, 1, 1) + rr


def reference(packets: list[tuple[bytes, tuple[str, int]]], transport: CountingTransport) -> float:
    """The bare floor: walk the labels, lower-case, one dict lookup, header + fixed answer."""
    table = {b"\x06casino\x07example": True}
    answer = packet.rr(packet.A, 60, bytes(4))
    flags = b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    started = time.process_time()
    for data, addr in packets:
        off = 12
        n = data[off]
        while n:
            off += n + 1
            n = data[off]
        table.get(data[12:off].lower())
        transport.sendto(data[:2] + flags + data[12 : off + 5] + answer, addr)
    return time.process_time() - started


def measure(
    handle: Callable[[bytes, tuple[str, int]], None], packets: list[tuple[bytes, tuple[str, int]]]
) -> float:
    """Seconds to hand every packet to the protocol."""
    started = time.process_time()
    for data, addr in packets:
        handle(data, addr)
    return time.process_time() - started


async def in_process(args: argparse.Namespace) -> None:
    """Build the service, then time each mix against the reference."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), args.domains, _free_port(), _free_port())
        loaded_at = time.perf_counter()
        service = Service(path)
        await service.start()
        print(f"started with {args.domains:,} domains in {time.perf_counter() - loaded_at:.2f} s")
        try:
            assert service.server is not None and service.cache is not None
            stored = parse_response(
                _cached_answer("www.school.example"),
                packet.question_bytes("www.school.example", 1, 1),
            )
            service.cache.put(("www.school.example", 1, 1, False), stored)
            transport = CountingTransport()
            protocol = UdpProtocol(service.server)
            protocol.connection_made(transport)  # type: ignore[arg-type]
            n = args.queries
            listed = listed_names(Path(tmp), n)
            many = [f"host{i}.school.example" for i in range(10_000)]
            for name in many:
                question = packet.question_bytes(name, 1, 1)
                service.cache.put(
                    (name, 1, 1, False), parse_response(_cached_answer(name), question)
                )
            mixes = {
                "blocked": [(query("Casino.example", 1, i & 0xFFFF), PUPIL) for i in range(n)],
                "cached": [(query("www.school.example", 1, i & 0xFFFF), PUPIL) for i in range(n)],
                "refused": [(query("casino.example", 1, i & 0xFFFF), OUTSIDER) for i in range(n)],
                "blocked+edns": [
                    (query("casino.example", 1, i & 0xFFFF, True), PUPIL) for i in range(n)
                ],
                # Every listed name once (as bench/dns's blocked mix): no memo helps.
                "blocked-unique": [(query(name, 1, i & 0xFFFF), PUPIL) for i, name in listed],
                # 10,000 cached names in turn (as bench/dns's allowed mix).
                "cached-10k": [
                    (query(many[i % len(many)], 1, i & 0xFFFF), PUPIL) for i in range(n)
                ],
            }
            ref_packets = mixes["blocked"]
            gc.collect()
            print(f"{'mix':<14} {'µs/query':>9} {'ref µs':>8} {'ratio':>6}  answered")
            for name, packets in mixes.items():
                best = best_ref = float("inf")
                for _ in range(args.repeat):
                    before = transport.sent
                    best = min(best, measure(protocol.datagram_received, packets))
                    answered = transport.sent - before
                    best_ref = min(best_ref, reference(ref_packets, CountingTransport()))
                count = len(packets)
                us, ref_us = best / count * 1e6, best_ref / n * 1e6
                print(f"{name:<14} {us:9.2f} {ref_us:8.2f} {us / ref_us:6.1f}  {answered}/{count}")
        finally:
            await service.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- dnsperf against the real server and a bare uvloop reference server ----------------------


class _Bare(asyncio.DatagramProtocol):
    """The reference server: hand-parse, one dict lookup, fixed answer."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.blocked = b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
        self.answer = packet.rr(packet.A, 60, bytes(4))
        self.table: dict[bytes, bool] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        off = 12
        n = data[off]
        while n:
            off += n + 1
            n = data[off]
        self.table.get(data[12:off].lower())
        assert self.transport is not None
        self.transport.sendto(data[:2] + self.blocked + data[12 : off + 5] + self.answer, addr)


def bare_server(port: int) -> None:
    """Run the reference server until SIGTERM (in a child process)."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(_Bare, local_addr=("127.0.0.1", port))
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(main())


def _dnsperf(port: int, names: list[str], seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"{name} A\n" for name in names))
        data = f.name
    try:
        command = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", data]
        command += ["-l", str(seconds), "-c", "4", "-q", "100"]
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
    finally:
        os.unlink(data)
    for line in out.splitlines():
        if "Queries per second" in line:
            return float(line.split(":")[1])
    raise RuntimeError(out)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sock.sendto(query("ready.example"), ("127.0.0.1", port))
            try:
                sock.recv(512)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"nothing answers on port {port}")


def with_dnsperf(args: argparse.Namespace) -> None:
    """dnsperf QPS of hedgerow-dns serve vs the bare server, per mix."""
    sys.path.insert(0, str(REPO / "tests"))
    with tempfile.TemporaryDirectory() as tmp:
        from tests.dns_support import FakeUpstream

        with FakeUpstream() as upstream:
            rng = random.Random(3)
            blocked = ["casino.example"] + [f"x{i}.blocked.example" for i in range(200)]
            allowed = [f"host{i}.school.example" for i in range(2000)]
            mixes = {
                "blocked": [rng.choice(blocked) for _ in range(20000)],
                "allowed": [rng.choice(allowed) for _ in range(20000)],
                "mix": [
                    rng.choice(blocked) if rng.random() < 0.2 else rng.choice(allowed)
                    for _ in range(20000)
                ],
            }
            directory = Path(tmp)
            port, bare_port = _free_port(), _free_port()
            path = write_config(directory, args.domains, port, upstream.port)
            text = path.read_text().replace(
                'allow_clients = ["127.0.0.0/9"]', 'allow_clients = ["127.0.0.0/8"]'
            )
            text = text.replace('clients = ["127.0.1.0/24"]', 'clients = ["127.0.0.0/8"]')
            (directory / "bench.txt").write_text(
                (directory / "bench.txt").read_text() + "blocked.example\n"
            )
            path.write_text(text)
            server = subprocess.Popen(
                [str(REPO / ".venv/bin/hedgerow-dns"), "serve", "--config", str(path)],
                stderr=subprocess.DEVNULL,
            )
            bare = subprocess.Popen(
                [sys.executable, __file__, "--bare-server", str(bare_port)],
            )
            try:
                _wait_ready(port)
                _wait_ready(bare_port)
                _dnsperf(port, allowed, 2)  # warm the cache
                print(f"{'mix':<8} {'hedgerow QPS':>13} {'bare QPS':>10} {'ratio':>6}")
                for mix, names in mixes.items():
                    ours = _dnsperf(port, names, args.seconds)
                    ref = _dnsperf(bare_port, names, args.seconds)
                    print(f"{mix:<8} {ours:13,.0f} {ref:10,.0f} {ours / ref:6.2f}")
            finally:
                for proc in (server, bare):
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)


def memory(args: argparse.Namespace) -> None:
    """VmRSS/VmHWM of `hedgerow-dns serve` with --domains blocked names, and the time from
    process start to the first correct answer: first cold (no list cache, no compiled index),
    then --runs warm starts on the same cache directory: re-executing itself under the
    installation's hash seed, and with the seed already in the environment (as a systemd
    `EnvironmentFile=` would pass it)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        path = write_config(Path(tmp), args.domains, port, _free_port())
        if args.school:
            _add_school_sections(path, Path(tmp) / "identity")
        seed_file = Path(tmp) / "cache" / "hashseed"
        runs = [("cold", False)] + [("warm", False), ("warm, seed in env", True)] * args.runs
        for label, seeded in runs:
            env = None
            if seeded:
                env = {**os.environ, "PYTHONHASHSEED": seed_file.read_text().strip()}
            first, rss, hwm = _start_once(path, port, env)
            print(
                f"{args.domains:,} domains, {label}: first answer "
                f"{first:.2f} s, VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB"
            )


def _add_school_sections(path: Path, identity_dir: Path) -> None:
    """[report], [beacon] and [server] metrics, with an identity as enrolment would write."""
    from common.identity import Identity, MqttCredentials
    from common.wire import OpeningKey, SigningKey

    Identity(
        site="bench-site",
        device="bench-dns",
        device_class="sinkhole",
        group="pupils",
        key=SigningKey.generate(),
        hub_key=OpeningKey.generate().public_key,
        hub_verify_keys=(SigningKey.generate().verify_key,),
        mqtt=MqttCredentials("mqtt://127.0.0.1:1", "bench-dns", "secret"),
        beacon_key=SigningKey.generate(),
    ).save(identity_dir)
    text = path.read_text().replace(
        "[upstream]", f'metrics = "127.0.0.1:{_free_port()}"\n\n[upstream]', 1
    )
    text += (
        f'\n[report]\nhub = "mqtt://127.0.0.1:1"\nidentity = "{identity_dir}"\n'
        f'\n[beacon]\nsite = "bench-site"\n'
    )
    path.write_text(text)


def _start_once(
    path: Path, port: int, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """Start the server, wait for a blocked answer, read its memory, stop it."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(REPO / ".venv/bin/hedgerow-dns"), "serve", "--config", str(path)],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.1.5", 0))
            sock.settimeout(0.05)
            while True:
                sock.sendto(query("casino.example"), ("127.0.0.1", port))
                try:
                    reply = sock.recv(512)
                    break
                except OSError:
                    assert server.poll() is None, "server exited"
        first = time.perf_counter() - started
        assert reply[-4:] == bytes(4), "casino.example should be blocked"
        time.sleep(1)
        status = Path(f"/proc/{server.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        rss, hwm = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
        return first, rss, hwm
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--dnsperf", action="store_true")
    parser.add_argument("--rss", action="store_true", help="memory and first answer")
    parser.add_argument("--runs", type=int, default=2, help="warm starts after the cold one")
    parser.add_argument("--school", action="store_true", help="--rss with report/beacon/metrics")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
    elif args.rss:
        memory(args)
    elif args.dnsperf:
        with_dnsperf(args)
    else:
        import uvloop

        uvloop.run(in_process(args))


if __name__ == "__main__":
    main()
