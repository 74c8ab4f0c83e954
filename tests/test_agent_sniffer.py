"""The packet sniffer: analysis of crafted scapy packets and a pcap, the wire form between
child and parent, and the real child on `lo` seeing a real DoT connect and a real DNS query,
restarted after being killed. The parent side never loads scapy."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from agent.laptop.activity import BypassFinding
from agent.laptop.sniffer import Sniffer
from agent.laptop.sniffer.analysis import analyse
from agent.laptop.sniffer.capture import BPF_FILTER, from_scapy, interfaces_up, read_pcap
from agent.laptop.sniffer.client_hello import server_name
from agent.laptop.sniffer.flows import FlowLimiter
from agent.laptop.sniffer.observed import Observed
from agent.laptop.sniffer.preflight import has_net_raw, why_not
from agent.laptop.sniffer.supervisor import OWNER_LOOKUPS_PER_S
from tests.waiting import wait_until

ALLOWED = ["10.0.0.53", "127.0.0.1"]


def client_hello(host: str) -> bytes:
    """A real TLS ClientHello for `host`, as Python's ssl module sends it."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def dns_query(name: str) -> bytes:
    """A DNS query for name/A, built by scapy."""
    return bytes(DNS(id=0x1234, rd=1, qd=DNSQR(qname=name)))


CASES: list[tuple[str, Packet, tuple[str, str, int, str] | None, dict[str, str | int]]] = [
    (
        "udp DNS to 8.8.8.8 is dns_elsewhere, with the name",
        IP(src="192.168.1.20", dst="8.8.8.8") / UDP(sport=40000, dport=53) / DNS(rd=1, qd=DNSQR(qname="Example.COM")),
        ("dns_elsewhere", "8.8.8.8", 53, "udp"),
        {"qname": "example.com", "src": "192.168.1.20"},
    ),
    (
        "tcp DNS to 8.8.8.8 is dns_elsewhere too",
        IP(src="192.168.1.20", dst="8.8.8.8") / TCP(sport=40001, dport=53, flags="PA") / DNS(rd=1, qd=DNSQR(qname="tcp.example")),
        ("dns_elsewhere", "8.8.8.8", 53, "tcp"),
        {"qname": "tcp.example"},
    ),
    (
        "IPv6 DNS to Google",
        IPv6(src="fd00::20", dst="2001:4860:4860::8888") / UDP(sport=40002, dport=53) / DNS(rd=1, qd=DNSQR(qname="v6.example")),
        ("dns_elsewhere", "2001:4860:4860::8888", 53, "udp"),
        {"qname": "v6.example"},
    ),
    (
        "DNS to an allowed server is nothing",
        IP(src="192.168.1.20", dst="10.0.0.53") / UDP(sport=40003, dport=53) / DNS(rd=1, qd=DNSQR(qname="fine.example")),
        None,
        {},
    ),
    (
        "a reply from 8.8.8.8 is nothing (its query counts)",
        IP(src="8.8.8.8", dst="192.168.1.20") / UDP(sport=53, dport=40000) / DNS(qr=1, qd=DNSQR(qname="example.com")),
        None,
        {},
    ),
    (
        "a DoT SYN to 853 is dot",
        IP(src="192.168.1.20", dst="9.9.9.9") / TCP(sport=40004, dport=853, flags="S"),
        ("dot", "9.9.9.9", 853, "tcp"),
        {},
    ),
    (
        "a DoT ClientHello names the server",
        IP(src="192.168.1.20", dst="1.1.1.1") / TCP(sport=40005, dport=853, flags="PA") / Raw(client_hello("one.one.one.one")),
        ("dot", "1.1.1.1", 853, "tcp"),
        {"sni": "one.one.one.one"},
    ),
    (
        "DoT to an allowed upstream is nothing",
        IP(src="192.168.1.20", dst="10.0.0.53") / TCP(sport=40006, dport=853, flags="S"),
        None,
        {},
    ),
    (
        "DoQ on UDP 853 is doq",
        IP(src="192.168.1.20", dst="94.140.14.14") / UDP(sport=40007, dport=853) / Raw(b"\xc0quic"),
        ("doq", "94.140.14.14", 853, "udp"),
        {},
    ),
    (
        "DoQ on UDP 8853 is doq",
        IP(src="192.168.1.20", dst="94.140.14.14") / UDP(sport=40008, dport=8853) / Raw(b"\xc0quic"),
        ("doq", "94.140.14.14", 8853, "udp"),
        {},
    ),
    (
        "IPv4-mapped IPv6 to an allowed server is nothing",
        IPv6(src="::ffff:192.168.1.20", dst="::ffff:10.0.0.53") / UDP(sport=40009, dport=53) / DNS(rd=1, qd=DNSQR(qname="x.example")),
        None,
        {},
    ),
]


@pytest.mark.parametrize(("packet", "want", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_analysis_of_crafted_packets(
    packet: Packet, want: tuple[str, str, int, str] | None, detail: dict[str, str | int]
) -> None:
    """Crafted packets, taken apart by scapy, read by from_scapy, judged by analyse."""
    obs = from_scapy(IP(bytes(packet)) if packet.haslayer(IP) else IPv6(bytes(packet)))
    assert obs is not None
    finding = analyse(obs, ALLOWED)
    if want is None:
        assert finding is None
        return
    assert finding is not None
    assert (finding.method, finding.remote, finding.port, finding.proto) == want
    assert finding.process is None
    assert finding.detail["source"] == "sniffer"
    for key, value in detail.items():
        assert finding.detail[key] == value


def test_from_scapy_leaves_out_what_is_not_tcp_or_udp() -> None:
    """ICMP and bare bytes are not Observed."""
    from scapy.layers.inet import ICMP

    assert from_scapy(IP(dst="8.8.8.8") / ICMP()) is None
    assert from_scapy(Raw(b"junk")) is None


def test_pcap_written_then_read(tmp_path: Path) -> None:
    """A pcap written with wrpcap reads back as the same Observed packets, in order."""
    packets = [
        Ether() / IP(src="192.168.1.20", dst="8.8.8.8") / UDP(sport=40000, dport=53) / DNS(rd=1, qd=DNSQR(qname="a.example")),
        Ether() / IP(src="192.168.1.20", dst="8.8.8.8") / TCP(sport=40001, dport=853, flags="S"),
        Ether() / IP(src="192.168.1.20", dst="8.8.8.8"),  # no transport: left out
        Ether() / IPv6(src="fd00::20", dst="2620:fe::fe") / UDP(sport=40002, dport=784) / Raw(b"q"),
    ]
    path = tmp_path / "bypass.pcap"
    wrpcap(str(path), packets)
    got = read_pcap(path)
    assert got == [
        Observed("udp", "192.168.1.20", "8.8.8.8", 40000, 53, "a.example", None),
        Observed("tcp", "192.168.1.20", "8.8.8.8", 40001, 853, None, None),
        Observed("udp", "fd00::20", "2620:fe::fe", 40002, 784, None, None),
    ]
    methods = [f.method if f else None for f in (analyse(o, ALLOWED) for o in got)]
    assert methods == ["dns_elsewhere", "dot", "doq"]


def test_bpf_filter_passes_only_dns_dot_doq() -> None:
    """The filter, compiled by libpcap as the capture compiles it, run by libpcap's own matcher
    (pcap_offline_filter) on crafted packets: DNS, DoT and DoQ pass, the rest does not."""
    import ctypes
    import ctypes.util

    from scapy.arch.common import compile_filter
    from scapy.data import DLT_RAW
    from scapy.libs.winpcapy import pcap_pkthdr

    libpcap = ctypes.CDLL(ctypes.util.find_library("pcap"))
    program = compile_filter(BPF_FILTER, linktype=DLT_RAW)
    # (scapy's default UDP source port is 53: every case names its own)
    cases = [
        (IP(dst="8.8.8.8") / UDP(sport=40000, dport=53), True),
        (IP(dst="8.8.8.8") / TCP(sport=40000, dport=53), True),
        (IP(src="8.8.8.8") / UDP(sport=53, dport=40000), True),
        (IP(dst="8.8.8.8") / TCP(sport=40000, dport=853), True),
        (IP(dst="8.8.8.8") / UDP(sport=40000, dport=853), True),
        (IP(dst="8.8.8.8") / UDP(sport=40000, dport=8853), True),
        (IP(dst="8.8.8.8") / UDP(sport=40000, dport=784), True),
        (IPv6(dst="2001:4860:4860::8888") / UDP(sport=40000, dport=53), True),
        (IPv6(dst="2001:4860:4860::8888") / TCP(sport=40000, dport=853), True),
        (IP(dst="8.8.8.8") / TCP(sport=40000, dport=443), False),
        (IP(dst="8.8.8.8") / UDP(sport=40000, dport=443), False),
        (IP(dst="8.8.8.8") / TCP(sport=40000, dport=8853), False),
        (IP(dst="8.8.8.8") / TCP(sport=40000, dport=784), False),
        (IP(dst="8.8.8.8") / UDP(sport=40000, dport=5353), False),
        (IPv6(dst="2001:4860:4860::8888") / TCP(sport=40000, dport=80), False),
    ]
    for packet, passes in cases:
        data = bytes(packet)
        header = pcap_pkthdr()
        header.len = header.caplen = len(data)
        matched = libpcap.pcap_offline_filter(
            ctypes.byref(program), ctypes.byref(header), ctypes.c_char_p(data)
        )
        assert (matched != 0) == passes, packet.summary()


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x16\x03\x01", b"\x17\x03\x03\x00\x10" + b"\x00" * 16, b"GET / HTTP/1.1\r\n\r\n"],
    ids=["empty", "cut short", "application data", "not TLS"],
)
def test_server_name_of_what_is_not_a_client_hello(payload: bytes) -> None:
    """Anything but a whole ClientHello with SNI has no server name."""
    assert server_name(payload) is None


def test_server_name_of_real_client_hellos() -> None:
    """Python's own ClientHello, whole and cut at every length short of its SNI."""
    hello = client_hello("Dns.Example.Org")
    assert server_name(hello) == "dns.example.org"
    assert all(server_name(hello[:n]) in (None, "dns.example.org") for n in range(len(hello)))


LINES = [
    ('{"proto":"udp","src":"a","dst":"b","sport":1,"dport":53,"qname":null,"tls_sni":null}', True),
    ('{"proto":"icmp","src":"a","dst":"b","sport":1,"dport":53,"qname":null,"tls_sni":null}', False),
    ('{"proto":"udp","src":"a","dst":"b","sport":1,"dport":70000,"qname":null,"tls_sni":null}', False),
    ('{"proto":"udp","src":"a","dst":"b","sport":true,"dport":53,"qname":null,"tls_sni":null}', False),
    ('{"proto":"udp","src":"a","dst":"b","sport":1,"dport":53,"qname":5,"tls_sni":null}', False),
    ('{"proto":"udp","src":"a","dst":"b","sport":1,"dport":53,"qname":null}', False),
    ('{"proto":"udp","src":"a","dst":"b","sport":1,"dport":53,"qname":null,"tls_sni":null,"x":1}', False),
    ("[1]", False),
    ("not json", False),
]


@pytest.mark.parametrize(("line", "good"), LINES)
def test_observed_lines(line: str, good: bool) -> None:
    """The child's lines are read strictly; a good one round-trips."""
    if good:
        obs = Observed.from_line(line)
        assert Observed.from_line(obs.to_line()) == obs
    else:
        with pytest.raises(ValueError):
            Observed.from_line(line)


def test_flow_limiter() -> None:
    """One line per flow per interval; names are part of the flow."""
    now = [100.0]
    limiter = FlowLimiter(lambda: now[0], interval_s=10.0)
    syn = Observed("tcp", "a", "b", 1, 853, None, None)
    hello = Observed("tcp", "a", "b", 1, 853, None, "dns.example")
    assert limiter.admit(syn)
    assert not limiter.admit(syn)
    assert limiter.admit(hello)
    now[0] += 9.9
    assert not limiter.admit(syn)
    now[0] += 0.2
    assert limiter.admit(syn)


def test_interfaces_up(tmp_path: Path) -> None:
    """Only interfaces whose flags have IFF_UP are captured on when none is named."""
    for name, flags in (("eth0", "0x1003"), ("ifb0", "0x82"), ("lo", "0x9"), ("odd", "zz")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "flags").write_text(flags + "\n", encoding="ascii")
    assert interfaces_up(tmp_path) == ["eth0", "lo"]
    assert "lo" in interfaces_up()


@pytest.mark.parametrize(
    ("cap_eff", "has"),
    [("0000003fffffffff", True), ("0000000000002000", True), ("0000000000001fff", False), ("0", False)],
)
def test_has_net_raw(tmp_path: Path, cap_eff: str, has: bool) -> None:
    """CAP_NET_RAW is bit 13 of CapEff."""
    status = tmp_path / "status"
    status.write_text(f"Name:\tpython\nCapInh:\t0\nCapEff:\t{cap_eff}\n", encoding="ascii")
    assert has_net_raw(status) is has


PARENT_IMPORTS = """
import sys
import agent.laptop.activity, agent.laptop.activity.sampler, agent.laptop.data
import agent.laptop.sniffer, agent.laptop.sniffer.supervisor, agent.laptop.sniffer.analysis
import agent.laptop.sniffer.preflight, agent.laptop.sniffer.observed
print(sorted(m for m in sys.modules if m == "scapy" or m.startswith("scapy.")))
"""


def test_parent_side_never_imports_scapy() -> None:
    """A fresh interpreter importing every parent-side module has no scapy module loaded."""
    out = subprocess.run(
        [sys.executable, "-c", PARENT_IMPORTS], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# The real sniffer on lo: queries to these are seen; 127.0.0.53 stands for our own filter.
OUR_FILTER = "127.0.0.53"


class Findings:
    """Collects findings from the sniffer's thread."""

    def __init__(self) -> None:
        self.items: list[BypassFinding] = []
        self.lock = threading.Lock()

    def __call__(self, finding: BypassFinding) -> None:
        with self.lock:
            self.items.append(finding)

    def has(self, method: str, remote: str) -> bool:
        with self.lock:
            return any(f.method == method and f.remote == remote for f in self.items)

    def remotes(self) -> set[str]:
        with self.lock:
            return {f.remote for f in self.items}


@pytest.fixture
def sniffer() -> Iterator[tuple[Sniffer, Findings]]:
    """A real Sniffer on lo, running (its child capturing)."""
    assert why_not() is None, f"the sniffer cannot run here: {why_not()}"
    found = Findings()
    sn = Sniffer(found, allowed_dns=lambda: [OUR_FILTER], interface="lo")
    sn.start()
    try:
        wait_until(lambda: sn.state == "running", timeout=60, what="the sniffer child to capture")
        yield sn, found
    finally:
        sn.stop()
    assert sn.child_pid is None


def send_query(server: str, name: str) -> None:
    """One real UDP DNS query to server:53 (nobody need answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(dns_query(name), (server, 53))


def test_real_sniffer_sees_dot_and_dns_on_lo(sniffer: tuple[Sniffer, Findings]) -> None:
    """A real TCP connect to 127.0.0.1:853 and a real DNS query to 127.0.0.9:53 are found; a
    query to our own filter, sent first, is not."""
    _, found = sniffer
    with socket.create_server(("127.0.0.1", 853)) as listener:
        send_query(OUR_FILTER, "allowed.example")
        with socket.create_connection(("127.0.0.1", 853), timeout=5):
            conn, _ = listener.accept()
            conn.close()
        send_query("127.0.0.9", "elsewhere.example")
        wait_until(lambda: found.has("dot", "127.0.0.1"), timeout=30, what="the dot finding")
        wait_until(lambda: found.has("dns_elsewhere", "127.0.0.9"), timeout=30, what="the DNS finding")
    # Packets reach the parent in order, so the allowed query, sent first, was seen and passed.
    assert OUR_FILTER not in found.remotes()
    elsewhere = next(f for f in found.items if f.method == "dns_elsewhere")
    assert elsewhere.detail["qname"] == "elsewhere.example"
    assert elsewhere.port == 53 and elsewhere.proto == "udp"


def test_a_finding_names_the_program_that_holds_the_socket(
    sniffer: tuple[Sniffer, Findings],
) -> None:
    """A DoT connection this test process keeps open is found with this process's name (the
    socket's owner, from psutil), as the psutil baseline's findings are."""
    _, found = sniffer
    with (
        socket.create_server(("127.0.0.1", 853)) as listener,
        socket.create_connection(("127.0.0.1", 853), timeout=5),
    ):
        conn, _ = listener.accept()
        with conn:
            wait_until(lambda: found.has("dot", "127.0.0.1"), timeout=30, what="the finding")
    dot = next(f for f in found.items if f.method == "dot")
    assert dot.process == psutil.Process().name(), dot


def test_naming_programs_is_budgeted() -> None:
    """A flood of bypass packets makes at most OWNER_LOOKUPS_PER_S socket-table scans a second;
    the rest go without a name (they are still findings)."""
    calls: list[int] = []

    def owner(proto: str, local: str, lport: int, remote: str, rport: int) -> str | None:
        calls.append(lport)
        return "evil-vpn"

    found = Findings()
    sn = Sniffer(found, allowed_dns=lambda: [OUR_FILTER], owner=owner)
    for port in range(40000, 40050):
        obs = Observed("udp", "127.0.0.1", f"10.9.{port % 250}.1", port, 53, "x.example", None)
        sn._handle(obs.to_line())
    assert 1 <= len(calls) <= OWNER_LOOKUPS_PER_S + 1
    named = [f for f in found.items if f.process == "evil-vpn"]
    assert len(named) == len(calls) and len(found.items) > len(named)


def test_killed_child_is_restarted(sniffer: tuple[Sniffer, Findings]) -> None:
    """SIGKILL to the child (by its pid): a new child runs, and findings flow again."""
    sn, found = sniffer
    first = sn.child_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: sn.child_pid not in (None, first) and sn.state == "running",
        timeout=60,
        what="a new sniffer child",
    )
    send_query("127.0.0.10", "after.restart.example")
    wait_until(lambda: found.has("dns_elsewhere", "127.0.0.10"), timeout=30, what="a finding after the restart")


NO_NET_RAW = """
import sys
from agent.laptop.sniffer import Sniffer
from agent.laptop.sniffer.supervisor import OWNER_LOOKUPS_PER_S
sn = Sniffer(lambda f: None, allowed_dns=lambda: [])
sn.start()
print(sn.state, sn.child_pid)
sn.stop()
"""


def test_without_cap_net_raw_state_says_why() -> None:
    """In a process without CAP_NET_RAW (dropped by setpriv) start() does not raise and
    state says why; no child is started."""
    out = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-c", NO_NET_RAW],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert out.stdout.strip() == "no CAP_NET_RAW None"
