"""The psutil bypass baseline: ActivitySampler finds real sockets this test opens (DoT to a
local listener on 853, DNS to a loopback address that is not allowed) and a real process named
like a VPN client; each finding is reported once per 10 minutes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.laptop.activity import ActivitySampler, BypassFinding
from agent.laptop.activity.connections import connection_findings
from agent.laptop.activity.findings import allowed_set
from agent.laptop.activity.host import Connection
from agent.laptop.data import flagged_apps
from tests.waiting import wait_until

OUR_FILTER = "127.0.0.53"


class Clock:
    """Wall time the test moves by hand (for the 10-minute de-duplication)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def sampler(clock: Clock | None = None) -> ActivitySampler:
    """A sampler with the shipped flagged list; our filter is the only allowed DNS server."""
    return ActivitySampler(
        flagged_apps=flagged_apps(),
        allowed_dns=lambda: [OUR_FILTER],
        **({"clock": clock} if clock else {}),
    )


def of(findings: list[BypassFinding], method: str) -> list[BypassFinding]:
    """The findings of one method."""
    return [f for f in findings if f.method == method]


def mine(findings: list[BypassFinding], method: str) -> list[BypassFinding]:
    """The socket findings of one method owned by this process (a closed connection of an
    earlier test, in TIME_WAIT, is found too, with no process)."""
    return [f for f in of(findings, method) if f.detail.get("pid") == os.getpid()]


@pytest.fixture
def dot_connection() -> Iterator[socket.socket]:
    """A real TCP connection from this process to a listener on 127.0.0.1:853."""
    with socket.create_server(("127.0.0.1", 853)) as listener:
        client = socket.create_connection(("127.0.0.1", 853), timeout=5)
        server, _ = listener.accept()
        try:
            yield client
        finally:
            client.close()
            server.close()


def udp_to(address: str, port: int) -> socket.socket:
    """A UDP socket connected to address:port (nobody need listen there)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((address, port))
    return sock


def test_real_sockets_found(dot_connection: socket.socket) -> None:
    """DoT to a local listener, DNS to 127.0.0.9 and DoQ to 127.0.0.1:853 are found, owned by
    this process; DNS to our own filter is not."""
    me = psutil.Process().name()
    with udp_to("127.0.0.9", 53), udp_to(OUR_FILTER, 53), udp_to("127.0.0.1", 853):
        found = sampler().sample()
    dot = mine(found, "dot")
    assert [(f.remote, f.port, f.proto, f.process) for f in dot] == [("127.0.0.1", 853, "tcp", me)]
    elsewhere = mine(found, "dns_elsewhere")
    assert [(f.remote, f.port, f.proto, f.process) for f in elsewhere] == [("127.0.0.9", 53, "udp", me)]
    assert [(f.remote, f.port, f.proto) for f in mine(found, "doq")] == [("127.0.0.1", 853, "udp")]
    assert OUR_FILTER not in {f.remote for f in found}
    assert dot[0].detail["source"] == "connections"


def test_same_finding_once_per_ten_minutes(dot_connection: socket.socket) -> None:
    """The same (method, remote, port, process) comes back only after 10 minutes."""
    clock = Clock()
    s = sampler(clock)
    assert mine(s.sample(), "dot")
    assert not mine(s.sample(), "dot")
    clock.now += 599
    assert not mine(s.sample(), "dot")
    clock.now += 2
    assert mine(s.sample(), "dot")


@pytest.fixture
def openvpn(tmp_path: Path) -> Iterator[Path]:
    """A copy of sleep named openvpn, and the processes started from it stopped by pid."""
    path = tmp_path / "openvpn"
    shutil.copy("/bin/sleep", path)
    yield path


def start(path: Path, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start path (a sleep) for long enough, remembering it to stop."""
    proc = subprocess.Popen([str(path), "300"])
    started.append(proc)
    # psutil names a process by its executable once exec has happened
    wait_until(lambda: psutil.Process(proc.pid).name() == path.name, timeout=10, what="exec")
    return proc


def test_flagged_app_started(openvpn: Path) -> None:
    """A process named openvpn started after the sampler is found and counted; a second one
    is counted but not reported again within 10 minutes."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        s = sampler()
        first = start(openvpn, started)
        found = of(s.sample(), "flagged_app")
        assert [(f.process, f.detail["pid"]) for f in found] == [("openvpn", first.pid)]
        start(openvpn, started)
        assert of(s.sample(), "flagged_app") == []
        window = s.window(counts_only=True)
        assert window["flagged_apps"] == [{"name": "openvpn", "count": 2}]
        assert s.window(counts_only=True)["flagged_apps"] == []
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_flagged_app_running_before_the_sampler(openvpn: Path) -> None:
    """A flagged app already running when the agent starts is reported at the first sample."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        proc = start(openvpn, started)
        s = sampler()
        found = of(s.sample(), "flagged_app")
        assert [(f.process, f.detail["pid"]) for f in found] == [("openvpn", proc.pid)]
        # It did not start in the window, so the window does not count it.
        assert s.window(counts_only=False)["flagged_apps"] == []
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


CONNECTIONS = [
    ("tcp", "8.8.8.8", 443, "doh"),
    ("udp", "8.8.8.8", 443, "doh"),  # HTTP/3
    ("tcp", "::ffff:1.1.1.1", 443, "doh"),
    ("tcp", "2606:4700:4700::1111", 443, "doh"),
    ("tcp", "45.90.28.77", 443, "doh"),  # inside NextDNS's anycast range
    ("tcp", "192.0.2.80", 443, None),  # an ordinary web server
    ("tcp", "8.8.8.8", 853, "dot"),
    ("tcp", "10.0.0.53", 853, None),  # our own DoT upstream
    ("udp", "9.9.9.9", 8853, "doq"),
    ("udp", "9.9.9.9", 784, "doq"),
    ("tcp", "9.9.9.9", 784, None),
    ("udp", "8.8.8.8", 53, "dns_elsewhere"),
    ("tcp", "8.8.8.8", 53, "dns_elsewhere"),
    ("udp", "10.0.0.53", 53, None),  # the Pi
    ("udp", "::ffff:10.0.0.53", 53, None),
    ("udp", "fe80::1%wlan0", 53, "dns_elsewhere"),
    ("tcp", "8.8.8.8", 80, None),
]


@pytest.mark.parametrize(("proto", "remote", "port", "method"), CONNECTIONS)
def test_connection_table(proto: str, remote: str, port: int, method: str | None) -> None:
    """Each kind of connection as psutil reports it, classified."""
    found = connection_findings(
        [Connection(proto, remote, port, 4242)],
        allowed=allowed_set(["10.0.0.53"]),
        name_of=lambda pid: "browser" if pid == 4242 else None,
    )
    assert [f.method for f in found] == ([method] if method else [])
    if found:
        assert found[0].process == "browser"
        assert ":" in found[0].remote or found[0].remote.count(".") == 3
        assert "%" not in found[0].remote and not found[0].remote.startswith("::ffff:")
