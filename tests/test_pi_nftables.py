"""The Pi's nftables ruleset (firmware-config/pi/nftables/) checked by `nft -c -f`, then loaded
on a router in network namespaces and shown to do its job against a real `hedgerow-dns serve`.

Six namespaces made by the test (every address inside them, nothing added to the host):

    pupil  10.241.20.10 --- pupil0 10.241.20.1 \\            /  10.241.10.1 pi0 --- 10.241.10.53 pi
    guest  10.241.30.10 --- guest0 10.241.30.1 -- gw (ruleset) -- 10.241.0.1 wan0 --- 10.241.0.2 net
    staff  10.241.40.10 --- staff0 10.241.40.1 /

net is the internet: the Pi's upstream resolver (203.0.113.53), some other resolver a pupil
tries (198.51.100.53, answering 198.51.100.7), a public encrypted-DNS resolver's address from
the shipped set (1.1.1.1) and an ordinary web server (198.51.100.80), all on its loopback.
The pupil, the router, the Pi and the net have IPv6 too (fd41::/16), with IPv6 twins of the
other resolver, the public resolver (2606:4700:4700::1111) and the web server.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.laptop.data import encrypted_dns_ips
from scripts import nft_resolver_set
from tests.netns_support import BIN, ROOT, NsProcess, ip, python_child, run_in
from tests.waiting import wait_until

PI_DIR = ROOT / "firmware-config" / "pi" / "nftables"
RULESET = PI_DIR / "hedgerow.nft"
SET_FILE = PI_DIR / "encrypted-dns-resolvers.nft"
SHIPPED_INCLUDE = "/etc/hedgerow/nftables/encrypted-dns-resolvers.nft"

PUPIL = "10.241.20.10"
GUEST = "10.241.30.10"
STAFF = "10.241.40.10"
PI = "10.241.10.53"
UPSTREAM = "203.0.113.53"
OTHER_RESOLVER = "198.51.100.53"
OTHER_ANSWER = "198.51.100.7"
UPSTREAM_ANSWER = "192.0.2.1"
PUBLIC_DOH = "1.1.1.1"  # in the shipped set
WEB = "198.51.100.80"  # not in the set
# IPv6: the same roles on fd41::/16 (a ULA), the resolvers on documentation addresses.
PUPIL6 = "fd41:20::10"
PI6 = "fd41:10::53"
OTHER_RESOLVER6 = "2001:db8:53::53"
PUBLIC_DOH6 = "2606:4700:4700::1111"  # in the shipped set
WEB6 = "2001:db8:80::80"

# The test's values for the ruleset's variables.
TEST_VALUES = {
    "PUPIL_IF": '"pupil0"',
    "GUEST_IF": '"guest0"',
    "PUPIL_NET4": "10.241.20.0/24",
    "GUEST_NET4": "10.241.30.0/24",
    "PI_ADDR4": PI,
    "PUPIL_NET6": "fd41:20::/64",
    "GUEST_NET6": "fd41:30::/64",
    "PI_ADDR6": PI6,
}

# A DNS server on argv[1] (IPv4 or IPv6) port 53, UDP and TCP, answering every A query with argv[2]. Prints
# "ready", then "query NAME" for each query it sees, so the test can tell who was asked.
RESPONDER_CHILD = """
import socket, struct, sys, threading
import dnslib

host, answer = sys.argv[1], sys.argv[2]


def reply(data):
    request = dnslib.DNSRecord.parse(data)
    print("query " + str(request.q.qname).rstrip("."), flush=True)
    out = request.reply()
    if request.q.qtype == dnslib.QTYPE.A:
        out.add_answer(dnslib.RR(request.q.qname, dnslib.QTYPE.A, rdata=dnslib.A(answer), ttl=60))
    return out.pack()


def read(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(reply(data), peer)


def serve_tcp(sock):
    while True:
        conn, _ = sock.accept()
        with conn:
            try:
                size = struct.unpack("!H", read(conn, 2))[0]
                out = reply(read(conn, size))
                conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                pass


family = socket.AF_INET6 if ":" in host else socket.AF_INET
udp = socket.socket(family, socket.SOCK_DGRAM)
udp.bind((host, 53))
tcp = socket.socket(family, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((host, 53))
tcp.listen(16)
threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# TCP listeners on each HOST:PORT argument; prints "ready", then "accepted HOST:PORT".
ACCEPTOR_CHILD = """
import socket, sys, threading


def serve(sock, name):
    while True:
        conn, _ = sock.accept()
        print("accepted " + name, flush=True)
        conn.close()


for item in sys.argv[1:]:
    host, port = item.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(16)
    threading.Thread(target=serve, args=(sock, item), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# One client attempt from a namespace: "tcp HOST PORT" connects, "udp HOST PORT" sends one
# datagram. Prints "connected", "timeout" or "sent".
PROBE_CHILD = """
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
if kind == "udp":
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(b"probe", (host, port))
    print("sent")
else:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((host, port))
            print("connected")
        except TimeoutError:
            print("timeout")
"""

PI_CONFIG = """
[server]
listen = ["{pi}:53", "[{pi6}]:53"]
allow_clients = ["10.241.0.0/16", "fd41::/16"]
list_cache_dir = "{root}/pi-cache"
[upstream]
servers = ["{upstream}:53"]
timeout_ms = 1000
[[lists]]
category = "gambling"
source = "{root}/gambling.txt"
[groups.pupils]
clients = ["10.241.20.0/24", "10.241.30.0/24", "fd41:20::/64"]
block = ["gambling"]
[default]
group = "pupils"
blocked_answer = "null"
"""


def filled_ruleset(directory: Path, values: dict[str, str]) -> Path:
    """The shipped ruleset with the test's variables and the set file's real path: each
    variable must be defined exactly once, or the file changed shape and this test must too."""
    text = RULESET.read_text()
    for name, value in values.items():
        text, count = re.subn(
            rf"^define {name} = .*$", f"define {name} = {value}", text, flags=re.M
        )
        assert count == 1, f"hedgerow.nft: `define {name}` found {count} times"
    assert text.count(SHIPPED_INCLUDE) == 1, "hedgerow.nft: the set file's include moved"
    text = text.replace(SHIPPED_INCLUDE, str(SET_FILE))
    path = directory / "hedgerow.nft"
    path.write_text(text)
    return path


def nft(ns: str, *args: str) -> str:
    """Run nft inside a namespace; fail loudly."""
    done = run_in(ns, "nft", *args)
    assert done.returncode == 0, f"nft {' '.join(args)}: {done.stderr}"
    return done.stdout


def counter(ns: str, name: str) -> int:
    """Packets a named counter of the hedgerow table has seen."""
    data = json.loads(nft(ns, "-j", "list", "counter", "inet", "hedgerow", name))
    found = [item["counter"] for item in data["nftables"] if "counter" in item]
    assert len(found) == 1, data
    return int(found[0]["packets"])


@dataclass
class Namespaces:
    """Namespaces with a unique tag per run; delete() removes every one made (and its links)."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{secrets.token_hex(2)}")
    made: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def add(self, role: str) -> str:
        """A new namespace with its loopback up."""
        name = f"hrw-nft-{self.tag}-{role}"
        ip("netns", "add", name)
        self.made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, ns_a: str, a: str, addr_a: str, ns_b: str, b: str, addr_b: str) -> None:
        """A veth pair between two namespaces, each end named and addressed inside its own."""
        tmp_a, tmp_b = f"k{self.tag}{a}"[:15], f"q{self.tag}{b}"[:15]
        # Made in the host namespace for a moment: remembered, so a failure before both ends
        # are moved still leaves nothing behind.
        self.links.append(tmp_a)
        ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        ip("link", "set", tmp_a, "netns", ns_a)
        ip("link", "set", tmp_b, "netns", ns_b)
        for ns, tmp, name, addr in ((ns_a, tmp_a, a, addr_a), (ns_b, tmp_b, b, addr_b)):
            ip("-n", ns, "link", "set", tmp, "name", name)
            ip("-n", ns, "addr", "add", addr, "dev", name)
            ip("-n", ns, "link", "set", name, "up")

    def delete(self) -> None:
        """Delete every namespace made (and a veth left in the host, if any); never raises."""
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        for link in self.links:
            # Normally gone already (moved into a namespace): "Cannot find device" is expected.
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)


@dataclass
class School:
    """The built networks and the processes running in them."""

    pupil: str
    guest: str
    staff: str
    gw: str
    pi: str
    net: str
    procs: dict[str, NsProcess]


def build(spaces: Namespaces) -> School:
    """Namespaces, links, addresses and routes as drawn at the top of this module."""
    roles = ("pupil", "guest", "staff", "gw", "pi", "net")
    pupil, guest, staff, gw, pi, net = (spaces.add(role) for role in roles)
    spaces.veth(pupil, "eth0", f"{PUPIL}/24", gw, "pupil0", "10.241.20.1/24")
    spaces.veth(staff, "eth0", f"{STAFF}/24", gw, "staff0", "10.241.40.1/24")
    spaces.veth(pi, "eth0", f"{PI}/24", gw, "pi0", "10.241.10.1/24")
    spaces.veth(net, "eth0", "10.241.0.2/24", gw, "wan0", "10.241.0.1/24")
    spaces.veth(guest, "eth0", f"{GUEST}/24", gw, "guest0", "10.241.30.1/24")
    gateways = ((pupil, "10.241.20.1"), (guest, "10.241.30.1"), (staff, "10.241.40.1"))
    for host, gateway in (*gateways, (pi, "10.241.10.1")):
        ip("-n", host, "route", "add", "default", "via", gateway)
    ip("-n", gw, "route", "add", "default", "via", "10.241.0.2")
    ip("-n", net, "route", "add", "10.241.0.0/16", "via", "10.241.0.1")
    for addr in (UPSTREAM, OTHER_RESOLVER, PUBLIC_DOH, WEB):
        ip("-n", net, "addr", "add", f"{addr}/32", "dev", "lo")
    ip("netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # IPv6 for the pupil, the Pi and the net; nodad, so an address is usable at once.
    for ns, dev, addr in (
        (pupil, "eth0", f"{PUPIL6}/64"),
        (gw, "pupil0", "fd41:20::1/64"),
        (pi, "eth0", f"{PI6}/64"),
        (gw, "pi0", "fd41:10::1/64"),
        (net, "eth0", "fd41::2/64"),
        (gw, "wan0", "fd41::1/64"),
    ):
        ip("-n", ns, "addr", "add", addr, "dev", dev, "nodad")
    for addr in (OTHER_RESOLVER6, PUBLIC_DOH6, WEB6):
        ip("-n", net, "addr", "add", f"{addr}/128", "dev", "lo")
    ip("-n", pupil, "-6", "route", "add", "default", "via", "fd41:20::1")
    ip("-n", pi, "-6", "route", "add", "default", "via", "fd41:10::1")
    ip("-n", gw, "-6", "route", "add", "default", "via", "fd41::2")
    ip("-n", net, "-6", "route", "add", "fd41::/16", "via", "fd41::1")
    ip("netns", "exec", gw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    return School(pupil, guest, staff, gw, pi, net, {})


def start(school: School, root: Path) -> None:
    """The two resolvers and the listeners in the net, then hedgerow-dns on the Pi."""
    procs = school.procs
    procs["upstream"] = NsProcess(
        school.net, python_child(RESPONDER_CHILD, UPSTREAM, UPSTREAM_ANSWER), root / "up.log"
    )
    procs["other"] = NsProcess(
        school.net,
        python_child(RESPONDER_CHILD, OTHER_RESOLVER, OTHER_ANSWER),
        root / "other.log",
    )
    procs["other6"] = NsProcess(
        school.net,
        python_child(RESPONDER_CHILD, OTHER_RESOLVER6, OTHER_ANSWER),
        root / "other6.log",
    )
    procs["listeners"] = NsProcess(
        school.net,
        python_child(
            ACCEPTOR_CHILD,
            *(f"{host}:853" for host in (OTHER_RESOLVER, OTHER_RESOLVER6)),
            *(f"{host}:443" for host in (PUBLIC_DOH, WEB, PUBLIC_DOH6, WEB6)),
        ),
        root / "listeners.log",
    )
    for name in ("upstream", "other", "other6", "listeners"):
        assert procs[name].first_line() == "ready", procs[name].text()
    (root / "gambling.txt").write_text("casino.example\n")
    config = root / "hedgerow-dns.toml"
    config.write_text(PI_CONFIG.format(pi=PI, pi6=PI6, root=root, upstream=UPSTREAM))
    procs["pi"] = NsProcess(
        school.pi, [f"{BIN}/hedgerow-dns", "serve", "--config", str(config)], root / "pi.log"
    )
    wait_until(
        lambda: procs["pi"].proc.poll() is not None or dig(school.pi, PI, "ready.example"),
        what="hedgerow-dns on the Pi to answer",
    )
    assert procs["pi"].proc.poll() is None, procs["pi"].text()


def dig(ns: str, server: str, name: str, *options: str) -> str:
    """The A records dig gets for `name` from `server`, asked from inside `ns` ("" if none)."""
    done = run_in(ns, "dig", f"@{server}", name, "A", "+short", "+tries=1", "+time=2", *options)
    return done.stdout.strip() if done.returncode == 0 else ""


def probe(ns: str, kind: str, host: str, port: int) -> str:
    """One TCP connect or UDP send from a namespace: "connected", "timeout" or "sent"."""
    done = run_in(ns, *python_child(PROBE_CHILD, kind, host, str(port)))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def school(tmp_path: Path) -> Iterator[School]:
    """The networks with the shipped ruleset (test values filled in) loaded on the router and
    everything running; torn down afterwards whatever happened."""
    spaces = Namespaces()
    built: School | None = None
    try:
        built = build(spaces)
        nft(built.gw, "-f", str(filled_ruleset(tmp_path, TEST_VALUES)))
        start(built, tmp_path)
        yield built
    finally:
        if built is not None:
            for proc in built.procs.values():
                proc.stop()
        spaces.delete()


def test_set_file_is_what_the_script_writes(tmp_path: Path) -> None:
    """The shipped set file is in sync with the anti-bypass address list."""
    assert SET_FILE.read_text() == nft_resolver_set.render()
    assert nft_resolver_set.main(["--check"]) == 0
    out = tmp_path / "sets.nft"
    assert nft_resolver_set.main(["--output", str(out)]) == 0
    assert out.read_text() == SET_FILE.read_text()
    out.write_text("stale\n")
    assert nft_resolver_set.main(["--check", "--output", str(out)]) == 1


@pytest.mark.parametrize(
    "values",
    [pytest.param({}, id="shipped-example-values"), pytest.param(TEST_VALUES, id="test-values")],
)
def test_nft_check_accepts_the_ruleset(tmp_path: Path, values: dict[str, str]) -> None:
    """`nft -c -f` passes on the ruleset (in a namespace of its own, though -c commits nothing)."""
    spaces = Namespaces()
    try:
        ns = spaces.add("check")
        path = filled_ruleset(tmp_path, values)
        nft(ns, "-c", "-f", str(path))
        # Loading twice works too: the network manager reloads after every edit.
        nft(ns, "-f", str(path))
        nft(ns, "-f", str(path))
        listed = nft(ns, "list", "ruleset")
        for name in ("dns_redirected", "dns_dropped", "dot_dropped", "doq_dropped", "doh_dropped"):
            assert f"counter {name} {{" in listed
    finally:
        spaces.delete()


def test_loaded_sets_hold_every_shipped_address(tmp_path: Path) -> None:
    """Every address and network of the agent's list is in the loaded sets."""
    spaces = Namespaces()
    try:
        ns = spaces.add("sets")
        nft(ns, "-f", str(filled_ruleset(tmp_path, {})))
        shipped = encrypted_dns_ips().networks
        for family in (4, 6):
            networks = [n for n in shipped if n.version == family]
            assert networks, f"no IPv{family} addresses in the shipped list"
            name = "encrypted_dns_v4" if family == 4 else "encrypted_dns_v6"
            # Each network's first and last address, one at a time: nft answers a lookup of
            # an address with the (merged) interval holding it.
            for network in networks:
                for address in {network.network_address, network.broadcast_address}:
                    nft(ns, "get", "element", "inet", "hedgerow", name, f"{{ {address} }}")
    finally:
        spaces.delete()


def test_pupil_dns_goes_to_the_pi_and_bypasses_are_dropped(school: School) -> None:
    """On the router: a pupil's query to another resolver is answered by the Pi, DoT, DoQ and
    DoH-by-address are dropped and counted, a staff host cannot reach another resolver, and the
    Pi reaches its upstream."""
    other, upstream, listeners = (school.procs[n] for n in ("other", "upstream", "listeners"))
    redirected = counter(school.gw, "dns_redirected")

    # A blocked name asked of another resolver: the Pi's answer (0.0.0.0), over UDP and TCP.
    assert dig(school.pupil, OTHER_RESOLVER, "casino.example") == "0.0.0.0"
    assert dig(school.pupil, OTHER_RESOLVER, "casino.example", "+tcp") == "0.0.0.0"
    # An allowed name: the Pi resolved it through its own upstream, not the resolver asked.
    assert dig(school.pupil, OTHER_RESOLVER, "news.example") == UPSTREAM_ANSWER
    assert dig(school.pupil, UPSTREAM, "direct.example") == UPSTREAM_ANSWER
    assert dig(school.guest, OTHER_RESOLVER, "casino.example") == "0.0.0.0"
    assert "query news.example" in upstream.text()
    assert counter(school.gw, "dns_redirected") >= redirected + 5

    # DoT: the connection never completes, and the drop is counted.
    dot = counter(school.gw, "dot_dropped")
    assert probe(school.pupil, "tcp", OTHER_RESOLVER, 853) == "timeout"
    assert counter(school.gw, "dot_dropped") > dot
    # DoQ: the datagram is dropped and counted.
    doq = counter(school.gw, "doq_dropped")
    assert probe(school.pupil, "udp", OTHER_RESOLVER, 853) == "sent"
    wait_until(lambda: counter(school.gw, "doq_dropped") > doq, what="the DoQ drop counted")
    # DoH to a public resolver's address: dropped; an ordinary HTTPS server is reachable, so
    # the drop is the set's doing and not a broken route.
    doh = counter(school.gw, "doh_dropped")
    assert probe(school.pupil, "tcp", PUBLIC_DOH, 443) == "timeout"
    assert counter(school.gw, "doh_dropped") > doh
    assert probe(school.pupil, "tcp", WEB, 443) == "connected"

    # A network that is not redirected (staff) cannot use another resolver either.
    dropped = counter(school.gw, "dns_dropped")
    assert dig(school.staff, OTHER_RESOLVER, "staff.example") == ""
    assert counter(school.gw, "dns_dropped") > dropped
    # The Pi itself reaches upstream DNS through the router.
    assert dig(school.pi, UPSTREAM, "pi.example") == UPSTREAM_ANSWER

    # The web server's log is later than every drop: nothing dropped reached a listener, and the
    # other resolver never saw a query.
    wait_until(lambda: f"accepted {WEB}:443" in listeners.text(), what="the web connection")
    assert "853" not in listeners.text() and PUBLIC_DOH not in listeners.text()
    assert "query" not in other.text(), other.text()


def test_ipv6_pupil_dns_goes_to_the_pi_and_bypasses_are_dropped(school: School) -> None:
    """The same over IPv6: the ruleset's ip6 rules redirect to the Pi's IPv6 address and drop
    DoT and DoH to a public resolver's IPv6 address."""
    other6, listeners = school.procs["other6"], school.procs["listeners"]
    redirected = counter(school.gw, "dns_redirected")
    # The first IPv6 packets can be lost while neighbour discovery settles on the new links
    # (link-local addresses still do DAD): the first answer may take a retry.
    wait_until(
        lambda: dig(school.pupil, OTHER_RESOLVER6, "casino.example") == "0.0.0.0",
        timeout=20,
        what="the Pi's answer over IPv6",
    )
    assert dig(school.pupil, OTHER_RESOLVER6, "casino.example", "+tcp") == "0.0.0.0"
    assert dig(school.pupil, OTHER_RESOLVER6, "news6.example") == UPSTREAM_ANSWER
    assert counter(school.gw, "dns_redirected") >= redirected + 3

    dot = counter(school.gw, "dot_dropped")
    assert probe(school.pupil, "tcp", OTHER_RESOLVER6, 853) == "timeout"
    assert counter(school.gw, "dot_dropped") > dot
    doh = counter(school.gw, "doh_dropped")
    assert probe(school.pupil, "tcp", PUBLIC_DOH6, 443) == "timeout"
    assert counter(school.gw, "doh_dropped") > doh
    assert probe(school.pupil, "tcp", WEB6, 443) == "connected"

    wait_until(lambda: f"accepted {WEB6}:443" in listeners.text(), what="the web connection")
    assert f"{OTHER_RESOLVER6}:853" not in listeners.text()
    assert f"{PUBLIC_DOH6}:443" not in listeners.text()
    assert "query" not in other6.text(), other6.text()
