"""hedgerow-dns over TCP against a pupil who attacks it: clients that never read their
answers, slowloris trickles, and idle connections by the hundred. Real sockets, and for memory
the real `hedgerow-dns serve` process, whose resident size is read from /proc."""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import dnslib

from tests.dns_support import (
    FakeUpstream,
    RunningDns,
    ask,
    free_dns_port,
    running_dns,
    write_config,
)
from tests.services import free_port, stop_process
from tests.waiting import wait_until

CLI = [sys.executable, "-m", "agent.dns.cli"]
STAFF = "127.0.2.7"
ATTACKER = "127.0.3.1"
MB = 1024 * 1024


def _config(tmp_path: Path, upstream: FakeUpstream, port: int, server_keys: str = "") -> Path:
    path = write_config(tmp_path, [upstream.address], port)
    text = path.read_text().replace("rate_limit_qps = 0", "rate_limit_qps = 0\n" + server_keys)
    path.write_text(text)
    return path


def _framed(name: str, qtype: str = "A", msg_id: int = 1) -> bytes:
    query = dnslib.DNSRecord.question(name, qtype)
    query.header.id = msg_id
    wire: bytes = query.pack()
    return struct.pack("!H", len(wire)) + wire


def _connect(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True if the server closes (or resets) the connection within `timeout` seconds."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return False
    try:
        return sock.recv(65535) == b""
    except ConnectionResetError:
        return True


def _timed_tcp_query(port: int, source: str) -> float:
    started = time.monotonic()
    reply = ask(port, "casino.example", "A", source, tcp=True)
    elapsed = time.monotonic() - started
    assert reply.header.rcode == 0 and reply.rr
    return elapsed


def _tcp_closed(dns: RunningDns, reason: str) -> float:
    assert dns.service.metrics is not None
    return dns.service.metrics.value("hedgerow_dns_tcp_closed_total", {"reason": reason})


@contextmanager
def _serving(path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--config", str(path)], stderr=out)
    try:
        wait_until(lambda: b"ready" in log.read_bytes() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        stop_process(proc)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _scrape(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def _sample(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_clients_that_never_read_cannot_grow_the_server(tmp_path: Path) -> None:
    # Four connections send queries for a 3 KB answer as fast as the server takes them and
    # never read. Without backpressure the server buffered every answer (93 -> 402 MB in 10 s).
    with FakeUpstream() as upstream:
        port, metrics_port = free_dns_port(), free_port()
        path = _config(tmp_path, upstream, port, f'metrics = "127.0.0.1:{metrics_port}"')
        with _serving(path, tmp_path / "serve.log") as proc:
            assert len(ask(port, "big.example", "TXT", STAFF, tcp=True).rr) == 40  # cached now
            baseline = _rss(proc.pid)
            burst = _framed("big.example", "TXT") * 512
            with ExitStack() as stack:
                attackers = [stack.enter_context(_connect(ATTACKER, port)) for _ in range(4)]
                for sock in attackers:
                    sock.setblocking(False)
                sent = 0
                peak = baseline
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    _, writable, _ = select.select([], attackers, [], 0.05)
                    for sock in writable:
                        with suppress(BlockingIOError, ConnectionError):
                            sent += sock.send(burst)
                    peak = max(peak, _rss(proc.pid))
                # The server still answers everyone else while the attack is held open.
                assert _timed_tcp_query(port, STAFF) < 1.0
                assert ask(port, "casino.example", "A", STAFF).rr
                metrics = _scrape(metrics_port)
            grown = peak - baseline
            print(
                f"sent {sent / MB:.1f} MB of queries; RSS {baseline / MB:.1f} MB, peak +{grown / MB:.1f} MB"
            )
            assert sent > 100_000  # the attack did send: thousands of 3 KB answers asked for
            assert grown < 16 * MB
            assert _sample(metrics, "hedgerow_dns_tcp_paused_total") >= 4


def test_trickled_message_closed_at_its_deadline_though_bytes_keep_coming(
    tmp_path: Path,
) -> None:
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, free_dns_port())
        with running_dns(path) as dns, _connect(ATTACKER, dns.port) as sock:
            message = _framed("casino.example")
            started = time.monotonic()
            closed = False
            for byte in message:  # one byte every 0.25 s: each would reset an idle timer
                try:
                    sock.send(bytes([byte]))
                except ConnectionError:
                    closed = True
                    break
                if _closed_by_server(sock, 0.25):
                    closed = True
                    break
            elapsed = time.monotonic() - started
            assert closed and 1.5 < elapsed < 4.0  # the 2 s message deadline, not 10 s idle
            wait_until(lambda: _tcp_closed(dns, "slow") == 1, 10, what="the slow close counted")
            assert _timed_tcp_query(dns.port, ATTACKER) < 1.0


def test_300_idle_connections_from_one_address_lock_nobody_out(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, free_dns_port())
        with running_dns(path) as dns, ExitStack() as stack:
            idle = []
            for _ in range(300):
                idle.append(stack.enter_context(_connect(ATTACKER, dns.port)))
            # Each connection past the 16 a client may hold closed that client's longest idle.
            wait_until(lambda: _tcp_closed(dns, "client_limit") == 300 - 16, 10)
            assert _timed_tcp_query(dns.port, STAFF) < 1.0
            assert _timed_tcp_query(dns.port, ATTACKER) < 1.0
            assert _closed_by_server(idle[0], 1.0)
            assert not _closed_by_server(idle[-1], 0.1)  # the newest are kept
            assert _tcp_closed(dns, "table_full") == 0


def test_full_table_closes_the_connection_idle_the_longest(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, free_dns_port(), "max_tcp_connections = 20")
        with running_dns(path) as dns, ExitStack() as stack:
            held = []
            for i in range(20):  # five addresses, four each: under the per-client cap
                sock = stack.enter_context(_connect(f"127.0.3.{10 + i % 5}", dns.port))
                held.append(sock)
            server = dns.service.server
            assert server is not None
            wait_until(lambda: server.tcp_connections == 20, 10)
            # The first one asks a question: now the second is the longest idle.
            held[0].sendall(_framed("casino.example"))
            size = struct.unpack("!H", held[0].recv(2, socket.MSG_WAITALL))[0]
            assert dnslib.DNSRecord.parse(held[0].recv(size, socket.MSG_WAITALL)).rr
            assert _timed_tcp_query(dns.port, STAFF) < 1.0
            assert _closed_by_server(held[1], 1.0)
            assert not _closed_by_server(held[0], 0.1)
            assert _tcp_closed(dns, "table_full") == 1
            assert server.tcp_connections <= 20


def test_pipelined_queries_past_the_in_flight_cap_all_answered(tmp_path: Path) -> None:
    # 100 cache misses in one write: at most 16 are with the upstream at once, reading stops
    # and starts again, and every query gets its answer on the same connection.
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, free_dns_port())
        with running_dns(path) as dns, _connect(STAFF, dns.port) as sock:
            sock.sendall(b"".join(_framed(f"n{i}.pipelined.example", msg_id=i) for i in range(100)))
            seen = set()
            for _ in range(100):
                size = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))[0]
                reply = dnslib.DNSRecord.parse(sock.recv(size, socket.MSG_WAITALL))
                assert reply.rr
                seen.add(reply.header.id)
            assert seen == set(range(100))


def test_the_tcp_limits_are_config_keys(tmp_path: Path) -> None:
    from agent.dns.cli import main as dns_main
    from agent.dns.config import load_config

    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port())
        text = path.read_text()
        keys = "max_tcp_per_client = 3\ntcp_message_timeout_s = 5\n"
        path.write_text(text.replace("[server]\n", f"[server]\n{keys}", 1))
        server = load_config(path).server
        assert (server.max_tcp_per_client, server.tcp_message_timeout_s) == (3, 5)
        path.write_text(text.replace("[server]\n", "[server]\ntcp_message_timeout_s = 0\n", 1))
        assert dns_main(["check", "--config", str(path)]) != 0
