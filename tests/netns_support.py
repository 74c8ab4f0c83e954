"""A school network and a home network in network namespaces, for the laptop agent's end-to-end
test (tests/test_agent_netns.py).

Five namespaces, every address inside them (nothing is added to the host):

    laptop  lt-s 10.231.0.10/24 ---- s-lan 10.231.0.1/24  school  s-wan 10.233.1.2/30 --+
            lt-h 10.232.0.10/24 ---- h-lan 10.232.0.1/24  home    h-wan 10.233.2.2/30 --+-- net
                                                                                           |
    net: the internet, with the hub's broker (10.233.0.1:1883), the policy's list server
    (10.233.0.1:8080) and the off-site upstream resolver (10.233.0.2), all on its loopback.

The school and home namespaces route between their LAN and the net, so the laptop reaches the
broker from either network, like a real hub on the internet. The laptop is "moved" by bringing
one of its links down, the other up, and changing its default route: a real netlink change.

The helpers in small Python programs (a resolver, the beacon forger, a retained publisher) run
under `ip netns exec` as child processes and are stopped by their PID.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.services import stop_process

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SCHOOL_NET = "10.231.0"
HOME_NET = "10.232.0"
PI = f"{SCHOOL_NET}.1"
HOME_ROUTER = f"{HOME_NET}.1"
BROKER_HOST = "10.233.0.1"
OFFSITE_HOST = "10.233.0.2"
ROAMING = "10.234.0.10"  # the laptop's own address, whichever network carries it
BROKER_PORT = 1883
LISTS_PORT = 8080

# A FakeUpstream (tests/dns_support.py) on argv[1]; prints its port, then reads modes
# ("answer", "silent") from stdin, one a line, so the test can kill and revive it.
UPSTREAM_CHILD = """
import sys
from tests.dns_support import FakeUpstream
with FakeUpstream(host=sys.argv[1]) as upstream:
    print(upstream.port, flush=True)
    for line in sys.stdin:
        upstream.mode = line.strip()
        print("mode " + upstream.mode, flush=True)
"""

# The home network's beacon forger, asked by dnsmasq for beacon.hedgerow.internal. Modes from
# stdin: "wrong_key" (right nonce, signed by a key of its own), "replay" (a real statement
# from the school's Pi, recorded once for another nonce), "slow" (a relay: the query passed to
# the real Pi and its answer returned late), "unsigned".
FORGER_CHILD = """
import socket, sys, threading, time
import dnslib
from common.beacon_statement import make_statement, nonce_of
from common.wire.signing import SigningKey

site, pi_host = sys.argv[1], sys.argv[2]
state = {"mode": "wrong_key", "recorded": None}
own_key = SigningKey.generate()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)


def ask_pi(data):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, (pi_host, 53))
        return s.recv(4096)


def txt(request, text):
    reply = request.reply()
    reply.add_answer(dnslib.RR(request.q.qname, dnslib.QTYPE.TXT, rdata=dnslib.TXT(text), ttl=0))
    return reply.pack()


def answer(data, addr):
    request = dnslib.DNSRecord.parse(data)
    nonce = nonce_of(str(request.q.qname).rstrip(".").lower())
    mode = state["mode"]
    if nonce is None:
        reply = request.reply()
        reply.header.rcode = dnslib.RCODE.NXDOMAIN
        out = reply.pack()
    elif mode == "wrong_key":
        out = txt(request, make_statement(own_key, site, nonce, int(time.time() * 1000)))
    elif mode == "unsigned":
        out = txt(request, ("hedgerow-beacon=1;%s;%s;%d;" % (site, nonce, time.time() * 1000)).encode())
    elif mode == "replay":
        if state["recorded"] is None:
            probe = dnslib.DNSRecord.question("aaaaaaaaaaaaaaaaaaaa.beacon.hedgerow.internal", "TXT")
            got = dnslib.DNSRecord.parse(ask_pi(probe.pack()))
            state["recorded"] = bytes(got.rr[0].rdata.data[0])
        out = txt(request, state["recorded"])
    else:  # slow: a relay through the school
        reply = ask_pi(data)
        time.sleep(0.25)
        out = reply
    sock.sendto(out, addr)


def serve():
    while True:
        data, addr = sock.recvfrom(4096)
        try:
            answer(data, addr)
        except Exception as exc:
            print("forger error: %r" % (exc,), file=sys.stderr, flush=True)


threading.Thread(target=serve, daemon=True).start()
for line in sys.stdin:
    state["mode"] = line.strip()
    print("mode " + state["mode"], flush=True)
"""

# A TCP relay: listens on 127.0.0.1 in its namespace and forwards each connection to a host
# in the net namespace, from the laptop's roaming address when one is given. The product allows
# plain mqtt:// and http:// list URLs only on loopback (anything else must be TLS), so the
# laptop and the Pi reach the broker and the list server as "127.0.0.1", through this relay,
# over the real routed networks. argv: source ("" for any) then LPORT:HOST:PORT ...
RELAY_CHILD = """
import asyncio, sys

source = sys.argv[1] or None


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def handler(host, port):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host, port, local_addr=(source, 0) if source else None)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


async def main():
    servers = []
    for spec in sys.argv[2:]:
        lport, host, port = spec.split(":")
        servers.append(await asyncio.start_server(handler(host, int(port)), "127.0.0.1", int(lport)))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

# Publish one file's bytes, retained, QoS 1, to a topic (argv: host port topic file).
RETAIN_CHILD = """
import sys
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
host, port, topic, path = sys.argv[1:5]
client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
client.connect(host, int(port))
client.loop_start()
info = client.publish(topic, open(path, "rb").read(), qos=1, retain=True)
info.wait_for_publish(30)
client.disconnect()
client.loop_stop()
print("published", flush=True)
"""


def ip(*args: str) -> None:
    """Run `ip` and fail loudly."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


def in_ns(ns: str, *command: str) -> list[str]:
    """The command line that runs `command` inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *command]


def run_in(ns: str, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace and return what it did (not checked)."""
    return subprocess.run(
        in_ns(ns, *command), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


class NsProcess:
    """A long-running child inside a namespace, its output in a log file; stopped by its PID
    (`ip netns exec` execs the command, so the PID is the command's own)."""

    def __init__(self, ns: str, command: Sequence[str], log: Path, *, stdin: bool = False) -> None:
        self.ns = ns
        self.command = list(command)
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            in_ns(ns, *command),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def text(self) -> str:
        """Everything it wrote so far."""
        return self.log.read_text(errors="replace")

    def send(self, line: str) -> None:
        """One line to its stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def first_line(self, timeout: float = 30) -> str:
        """The first line it printed (a child's port), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.text().splitlines()
            if lines:
                return lines[0]
            assert self.proc.poll() is None, f"{self.command} exited: {self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"{self.command} printed nothing in {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL if it will not go), then close our ends."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc)
        self._out.close()


@dataclass
class Networks:
    """The namespaces and links described at the top of this module; build(), then delete()
    in a finally (deleting a namespace deletes every link in it)."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{secrets.token_hex(2)}")
    where: str = "nowhere"

    def ns(self, role: str) -> str:
        """The namespace name of one role: laptop, school, home, net (unique to this run)."""
        return f"hrw-{self.tag}-{role}"

    @property
    def laptop(self) -> str:
        """The laptop's namespace."""
        return self.ns("laptop")

    @property
    def school(self) -> str:
        """The school's namespace."""
        return self.ns("school")

    @property
    def home(self) -> str:
        """The home's namespace."""
        return self.ns("home")

    @property
    def net(self) -> str:
        """The internet's namespace."""
        return self.ns("net")

    def build(self) -> None:
        """Create the namespaces, links, addresses and routes."""
        for role in ("laptop", "school", "home", "net"):
            ip("netns", "add", self.ns(role))
            ip("-n", self.ns(role), "link", "set", "lo", "up")
        self._veth(self.laptop, "lt-s", f"{SCHOOL_NET}.10/24", self.school, "s-lan", f"{PI}/24")
        self._veth(
            self.laptop, "lt-h", f"{HOME_NET}.10/24", self.home, "h-lan", f"{HOME_ROUTER}/24"
        )
        self._veth(self.school, "s-wan", "10.233.1.2/30", self.net, "n-s", "10.233.1.1/30")
        self._veth(self.home, "h-wan", "10.233.2.2/30", self.net, "n-h", "10.233.2.1/30")
        for addr in (BROKER_HOST, OFFSITE_HOST):
            ip("-n", self.net, "addr", "add", f"{addr}/32", "dev", "lo")
        for router in (self.school, self.home, self.net):
            ip("netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for router, gateway in ((self.school, "10.233.1.1"), (self.home, "10.233.2.1")):
            ip("-n", router, "route", "add", "default", "via", gateway)
        ip("-n", self.net, "route", "add", f"{SCHOOL_NET}.0/24", "via", "10.233.1.2")
        ip("-n", self.net, "route", "add", f"{HOME_NET}.0/24", "via", "10.233.2.2")
        # The laptop's roaming address: kept across moves, so its broker connection survives
        # one (as a phone's does across Wi-Fi and mobile data) while everything else changes.
        ip("-n", self.laptop, "addr", "add", f"{ROAMING}/32", "dev", "lo")
        ip("-n", self.school, "route", "add", f"{ROAMING}/32", "via", f"{SCHOOL_NET}.10")
        ip("-n", self.home, "route", "add", f"{ROAMING}/32", "via", f"{HOME_NET}.10")
        ip("-n", self.laptop, "link", "set", "lt-h", "down")

    def _veth(self, ns_a: str, a: str, addr_a: str, ns_b: str, b: str, addr_b: str) -> None:
        ip(
            "link",
            "add",
            f"t{self.tag}{a}"[:15],
            "type",
            "veth",
            "peer",
            "name",
            f"u{self.tag}{b}"[:15],
        )
        ip("link", "set", f"t{self.tag}{a}"[:15], "netns", ns_a)
        ip("link", "set", f"u{self.tag}{b}"[:15], "netns", ns_b)
        ip("-n", ns_a, "link", "set", f"t{self.tag}{a}"[:15], "name", a)
        ip("-n", ns_b, "link", "set", f"u{self.tag}{b}"[:15], "name", b)
        for ns, name, addr in ((ns_a, a, addr_a), (ns_b, b, addr_b)):
            ip("-n", ns, "addr", "add", addr, "dev", name)
            ip("-n", ns, "link", "set", name, "up")

    def move(self, where: str, resolv_confs: Sequence[Path]) -> None:
        """Take the laptop to "school" or "home": first the DHCP-given resolv.conf (each agent
        has its own file), then the links and the default route, as a Wi-Fi switch does."""
        up, down, gateway = (
            ("lt-s", "lt-h", PI) if where == "school" else ("lt-h", "lt-s", HOME_ROUTER)
        )
        for path in resolv_confs:
            path.write_text(f"# from DHCP ({where})\nnameserver {gateway}\n")
        ip("-n", self.laptop, "link", "set", down, "down")
        ip("-n", self.laptop, "link", "set", up, "up")
        ip("-n", self.laptop, "route", "replace", "default", "via", gateway, "dev", up)
        wan = "10.233.1.2" if where == "school" else "10.233.2.2"
        ip("-n", self.net, "route", "replace", f"{ROAMING}/32", "via", wan)
        self.where = where

    def delete(self) -> None:
        """Delete every namespace this run made (and so every link); never raises."""
        for role in ("laptop", "school", "home", "net"):
            subprocess.run(["ip", "netns", "del", self.ns(role)], capture_output=True, timeout=30)


def mosquitto_conf(directory: Path) -> Path:
    """A broker config listening on the net's broker address, persistent in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {BROKER_PORT} {BROKER_HOST}",
                f"listener {BROKER_PORT} 127.0.0.1",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {directory}/",
                "max_queued_messages 0",
                "max_inflight_messages 100",
                "user root",
            ]
        )
        + "\n"
    )
    return conf


def dnsmasq_command(forger_port: int, isp_port: int) -> list[str]:
    """The home router's ordinary resolver: forwards to the "ISP" resolver, and the beacon
    zone to the forger (dnsmasq cannot answer a wildcard TXT itself)."""
    return [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        f"--listen-address={HOME_ROUTER}",
        "--bind-interfaces",
        "--port=53",
        "--no-resolv",
        "--no-hosts",
        "--pid-file",
        "--cache-size=0",
        "--log-facility=-",
        f"--server=/beacon.hedgerow.internal/127.0.0.1#{forger_port}",
        f"--server=127.0.0.1#{isp_port}",
    ]


def python_child(code: str, *args: str) -> list[str]:
    """A small Python program (run from the repository root, warnings as errors)."""
    return [sys.executable, "-W", "error", "-c", code, *args]
