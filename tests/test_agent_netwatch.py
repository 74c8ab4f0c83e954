"""The network watcher and the network identity, in network namespaces this test creates
(veth pairs, addresses only inside them), with the watcher running in a real child process
under `ip netns exec`."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from agent.laptop.site.fingerprint import parse_fib_trie, parse_if_inet6
from agent.laptop.site.netwatch import GROUPS, NetWatcher, open_netlink
from agent.laptop.site.network_id import (
    identity_hash,
    parse_arp,
    parse_iw_link,
    parse_nmcli_wifi,
)
from agent.laptop.site.routes import DefaultRoute, parse_ipv4_routes, parse_ipv6_routes
from tests.services import stop_process

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import asyncio, json, logging, signal, socket, sys, time
import uvloop
from agent.laptop.site.fingerprint import snapshot
from agent.laptop.site.netwatch import NetWatcher


def report() -> None:
    now = snapshot()
    names = sorted(name for _, name in socket.if_nameindex())
    print("change " + json.dumps({"links": names, "up": now.links_up,
          "addresses": now.addresses, "routes": now.default_routes}), flush=True)


def no_netlink() -> socket.socket:  # as on a system without netlink sockets
    raise OSError(97, "Address family not supported by protocol")


def busy() -> None:  # hold the event loop, so netlink events pile up in the kernel
    print("busy", flush=True)
    time.sleep(3)
    print("woke", flush=True)


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, busy)
    poll_only = sys.argv[1] == "poll"
    opener = no_netlink if sys.argv[1] == "no-netlink" else None
    watcher = NetWatcher(report, debounce_s=0.2, poll_s=0.2, poll_only=poll_only,
                         **({"opener": opener} if opener else {}))
    await watcher.start()
    print("ready " + json.dumps({"health": watcher.health, "mode": watcher.mode}), flush=True)
    await stop.wait()
    health = watcher.health
    await watcher.stop()
    print("stopped " + json.dumps(health), flush=True)


# uvloop, as the agent's filter runs it: the netlink socket is watched by uvloop's add_reader.
(uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
"""

IDENTITY_CHILD = """
import json, sys
from agent.laptop.site.network_id import default_gateway, network_identity
print(json.dumps({"gateway": default_gateway(), "id": network_identity(bytes.fromhex(sys.argv[1]))}))
"""


def ip(*args: str) -> None:
    """Run `ip` and fail loudly."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace, deleted afterwards (with every link in it)."""
    name = f"hrw-nw-{os.getpid()}-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Child:
    """The watcher in a child process inside a namespace; its lines read on a thread."""

    def __init__(self, netns: str, mode: str, stderr: Path) -> None:
        self.stderr_path = stderr
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-W", "error", "-c", CHILD, mode],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode().rstrip("\n"))
        self.lines.put(None)

    def next_line(self, what: str, timeout: float = 5.0) -> str:
        """The next line, which must come within `timeout` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            raise AssertionError(f"no {what} from the watcher: {self.stderr_path.read_text()}")
        return line

    def ready(self) -> dict[str, Any]:
        """The watcher's health and mode once started."""
        line = self.next_line("ready line", 30.0)
        assert line.startswith("ready "), line
        started: dict[str, Any] = json.loads(line[6:])
        return started

    def change(self, what: str, seen: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Wait (at most 5 s) for a change report whose picture shows `seen`."""
        while True:
            line = self.next_line(f"change showing {what}")
            assert line.startswith("change "), line
            picture: dict[str, Any] = json.loads(line[7:])
            if seen(picture):
                return picture

    def rest(self) -> list[str]:
        """The lines not read yet (after stop())."""
        lines: list[str] = []
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                lines.append(line)
        return lines

    def stop(self) -> int:
        """SIGTERM our child by PID; its exit code."""
        stop_process(self.proc)
        self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return int(self.proc.returncode)


@pytest.fixture
def run_child(netns: str, tmp_path: Path) -> Iterator[Callable[[str], Child]]:
    children: list[Child] = []

    def start(mode: str) -> Child:
        child = Child(netns, mode, tmp_path / f"child-{len(children)}.err")
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.stop()


# --- netlink, for real ----------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_netlink_reports_link_address_and_default_route(
    netns: str, run_child: Callable[[str], Child], loop: str
) -> None:
    child = run_child(loop)
    assert child.ready() == {"health": None, "mode": "netlink"}
    ip("-n", netns, "link", "add", "hwA", "type", "veth", "peer", "name", "hwB")
    child.change("the new link", lambda p: "hwA" in p["links"])
    ip("-n", netns, "link", "set", "hwB", "up")
    ip("-n", netns, "link", "set", "hwA", "up")
    child.change("hwA up", lambda p: "hwA" in p["up"])
    ip("-n", netns, "addr", "add", "10.77.0.2/24", "dev", "hwA")
    child.change("the address", lambda p: "10.77.0.2" in p["addresses"])
    ip("-n", netns, "route", "add", "default", "via", "10.77.0.1", "dev", "hwA")
    child.change("the default route", lambda p: p["routes"] == ["hwA via 10.77.0.1"])
    ip("-n", netns, "route", "del", "default")
    child.change("no default route", lambda p: p["routes"] == [])
    ip("-n", netns, "link", "set", "hwA", "down")
    child.change("hwA down", lambda p: "hwA" not in p["up"])
    assert child.stop() == 0
    assert child.rest()[-1:] == ["stopped null"]  # a clean stop, after SIGTERM, on netlink


def test_a_burst_is_one_report_with_all_of_it(
    netns: str, run_child: Callable[[str], Child], tmp_path: Path
) -> None:
    child = run_child("asyncio")
    assert child.ready() == {"health": None, "mode": "netlink"}
    batch = tmp_path / "burst.ip"
    batch.write_text("".join(f"addr add 10.79.0.{n}/32 dev lo\n" for n in (1, 2, 3)))
    ip("-n", netns, "-batch", str(batch))
    picture = child.change(
        "an address", lambda p: any(a.startswith("10.79.0.") for a in p["addresses"])
    )
    assert {"10.79.0.1", "10.79.0.2", "10.79.0.3"} <= set(picture["addresses"])


def test_events_lost_while_busy_are_a_change_and_netlink_goes_on(
    netns: str, run_child: Callable[[str], Child], tmp_path: Path
) -> None:
    child = run_child("asyncio")
    assert child.ready() == {"health": None, "mode": "netlink"}
    child.proc.send_signal(signal.SIGUSR1)
    assert child.next_line("busy") == "busy"
    batch = tmp_path / "flood.ip"
    # Far more than the socket's receive buffer holds: the kernel drops events (ENOBUFS).
    batch.write_text(
        "".join(f"addr add 10.80.{n // 250}.{n % 250 + 1}/32 dev lo\n" for n in range(20000))
    )
    ip("-n", netns, "-batch", str(batch))
    assert child.next_line("woke") == "woke"
    child.change("a change after the loss", lambda p: "10.80.0.1" in p["addresses"])
    assert "netlink events lost" in child.stderr_path.read_text()
    ip("-n", netns, "addr", "del", "10.80.0.1/32", "dev", "lo")
    child.change("the address gone", lambda p: "10.80.0.1" not in p["addresses"])
    assert child.stop() == 0
    assert child.rest()[-1:] == ["stopped null"]  # still on netlink, not polling


def test_polling_fallback_sees_an_address_change(
    netns: str, run_child: Callable[[str], Child]
) -> None:
    child = run_child("poll")
    assert child.ready() == {"health": "polling was asked for; polling every 0.2 s", "mode": "poll"}
    ip("-n", netns, "addr", "add", "10.78.0.2/24", "dev", "lo")
    child.change("the address", lambda p: "10.78.0.2" in p["addresses"])
    assert child.stop() == 0


def test_without_netlink_it_polls_and_says_why(
    netns: str, run_child: Callable[[str], Child]
) -> None:
    child = run_child("no-netlink")
    started = child.ready()
    assert started["mode"] == "poll"
    assert started["health"].startswith("netlink cannot be opened: ")
    assert started["health"].endswith("; polling every 0.2 s")
    ip("-n", netns, "link", "set", "lo", "up")
    child.change("lo up", lambda p: "lo" in p["up"])
    assert child.stop() == 0


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run])
def test_start_and_stop_release_the_socket_and_tasks(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    # In the test's own namespace: listening to netlink changes nothing there.
    async def cycle() -> None:
        before = _open_fds()
        threads = threading.active_count()
        for _ in range(3):
            watcher = NetWatcher(lambda: None)
            await watcher.start()
            assert (watcher.health, watcher.mode) == (None, "netlink")
            await watcher.stop()
            assert watcher.mode == "stopped"
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not others, others
        assert _open_fds() <= before, _open_fds() - before
        assert threading.active_count() <= threads  # no thread of its own

    run(cycle())


def test_poll_only_start_and_stop() -> None:
    async def cycle() -> None:
        watcher = NetWatcher(lambda: None, poll_only=True, poll_s=3600)
        await watcher.start()
        assert watcher.health == "polling was asked for; polling every 3600 s"
        await asyncio.wait_for(watcher.stop(), 5)  # does not sit out the poll interval
        assert not asyncio.all_tasks() - {asyncio.current_task()}

    asyncio.run(cycle())


def test_the_netlink_socket_is_subscribed_to_links_addresses_and_routes() -> None:
    sock = open_netlink()
    try:
        # (port id, groups): the kernel gives the port id; the groups are what we asked for.
        assert sock.getsockname()[1] == GROUPS
        assert not sock.getblocking()
    finally:
        sock.close()


def test_a_repeated_event_is_not_a_change(netns: str, run_child: Callable[[str], Child]) -> None:
    ip("-n", netns, "link", "set", "lo", "up")
    child = run_child("asyncio")
    assert child.ready() == {"health": None, "mode": "netlink"}
    ip("-n", netns, "addr", "add", "10.81.0.2/32", "dev", "lo")
    child.change("the address", lambda p: "10.81.0.2" in p["addresses"])
    # The same address again, as a DHCP renewal or a router advertisement repeats it: the
    # kernel announces it, the picture is unchanged, and nothing is reported.
    ip(
        "-n",
        netns,
        "addr",
        "change",
        "10.81.0.2/32",
        "dev",
        "lo",
        "valid_lft",
        "3600",
        "preferred_lft",
        "3600",
    )
    ip("-n", netns, "route", "replace", "10.82.0.0/24", "dev", "lo")  # not a default route
    time.sleep(1.0)  # five debounce periods: a report would have come by now
    assert child.lines.empty(), child.lines.get()
    ip("-n", netns, "addr", "add", "10.81.0.3/32", "dev", "lo")
    line = child.next_line("the next address")
    assert "10.81.0.3" in json.loads(line[7:])["addresses"], line
    assert child.stop() == 0


FIB_TRIE = """Main:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.77.0.0/24 2 0 2
        |-- 10.77.0.0
           /24 link UNICAST
        |-- 10.77.0.2
           /32 host LOCAL
        |-- 10.77.0.255
           /32 link BROADCAST
     |-- 10.79.0.1
        /32 host LOCAL
Local:
  +-- 0.0.0.0/1 2 0 2
     |-- 10.79.0.1
        /32 host LOCAL
"""
IF_INET6 = (
    "00000000000000000000000000000001 01 80 10 80       lo\n"
    "fe8000000000000000fc00fffe000001 04 40 20 80     wlan0\n"
    "not a line\n"
)


def test_parse_addresses_for_the_polling_picture() -> None:
    assert parse_fib_trie(FIB_TRIE) == {"10.77.0.2", "10.79.0.1"}
    assert parse_if_inet6(IF_INET6) == {"lo ::1", "wlan0 fe80::fc:ff:fe00:1"}


# --- routes and the network identity --------------------------------------------------------

PROC_ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0
tun0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0
"""

PROC_IPV6_ROUTE = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n"
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001 wlan0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n"
)


def test_parse_routes() -> None:
    assert parse_ipv4_routes(PROC_ROUTE) == [
        DefaultRoute(socket.AF_INET, 600, "wlan0", "192.168.1.1"),
        DefaultRoute(socket.AF_INET, 50, "tun0", None),
    ]
    assert parse_ipv6_routes(PROC_IPV6_ROUTE) == [
        DefaultRoute(socket.AF_INET6, 1024, "wlan0", "fe80::1")
    ]
    assert parse_ipv4_routes("garbage\nnot a route line at all\n") == []


ARP = """IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         AA:BB:CC:00:11:22     *        wlan0
192.168.1.9      0x1         0x0         00:00:00:00:00:00     *        wlan0
"""


@pytest.mark.parametrize(
    ("address", "mac"),
    [("192.168.1.1", "aa:bb:cc:00:11:22"), ("192.168.1.9", None), ("192.168.1.2", None)],
)
def test_parse_arp(address: str, mac: str | None) -> None:
    assert parse_arp(ARP, address) == mac


@pytest.mark.parametrize(
    ("parse", "text", "ssid"),
    [
        (
            parse_iw_link,
            "Connected to aa:bb:cc:00:11:22 (on wlan0)\n\tSSID: Cape Guest\n",
            "Cape Guest",
        ),
        (parse_iw_link, "Not connected.\n", None),
        (parse_nmcli_wifi, "no:Other\nyes:Home\\:5G\n", "Home:5G"),
        (parse_nmcli_wifi, "no:Other\n", None),
    ],
)
def test_parse_ssid(parse: Callable[[str], str | None], text: str, ssid: str | None) -> None:
    assert parse(text) == ssid


KEY = bytes(range(32))
MAC = "aa:bb:cc:00:11:22"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ((KEY, MAC, "Home"), (KEY, MAC, "Home"), True),
        ((KEY, MAC, "Home"), (KEY, MAC.upper(), "Home"), True),  # MAC case does not matter
        ((KEY, MAC, "Home"), (bytes(32), MAC, "Home"), False),  # another key
        ((KEY, MAC, "Home"), (KEY, MAC, "Home2"), False),
        ((KEY, MAC, "Home"), (KEY, "aa:bb:cc:00:11:23", "Home"), False),
        ((KEY, MAC, None), (KEY, MAC, ""), True),
        ((KEY, "ab", "c"), (KEY, "a", "bc"), False),  # fields do not run into each other
    ],
)
def test_identity_hash(
    a: tuple[bytes, str, str | None], b: tuple[bytes, str, str | None], same: bool
) -> None:
    first = identity_hash(a[0], gateway_mac=a[1], ssid=a[2])
    second = identity_hash(b[0], gateway_mac=b[1], ssid=b[2])
    assert (first == second) is same
    assert len(first) == 32 and int(first, 16) >= 0
    for raw in (MAC, MAC.replace(":", ""), "Home", b"Home".hex(), bytes.fromhex("aabbcc").hex()):
        assert raw not in first


def test_gateway_address_counts_only_without_a_mac() -> None:
    with_mac = {identity_hash(KEY, gateway_mac=MAC, ssid=None, gateway=g) for g in ("a", "b")}
    assert len(with_mac) == 1
    without = {identity_hash(KEY, gateway_mac=None, ssid=None, gateway=g) for g in ("a", "b")}
    assert len(without) == 2


def _identity_in(netns: str, key: bytes) -> dict[str, Any]:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-W",
            "error",
            "-c",
            IDENTITY_CHILD,
            key.hex(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_network_identity_in_a_namespace(netns: str) -> None:
    key = secrets.token_bytes(32)
    assert _identity_in(netns, key) == {"gateway": None, "id": None}  # no default route
    gateway_mac = "02:00:5e:10:20:30"
    ip("-n", netns, "link", "add", "hwA", "type", "veth", "peer", "name", "hwB")
    for link in ("hwA", "hwB"):
        ip("-n", netns, "link", "set", link, "up")
    ip("-n", netns, "addr", "add", "10.77.0.2/24", "dev", "hwA")
    ip("-n", netns, "route", "add", "default", "via", "10.77.0.1", "dev", "hwA")
    ip("-n", netns, "neigh", "add", "10.77.0.1", "lladdr", gateway_mac, "dev", "hwA")
    found = _identity_in(netns, key)
    assert found["gateway"] == "10.77.0.1"
    assert found["id"] == identity_hash(key, gateway_mac=gateway_mac, ssid=None)
    assert gateway_mac not in json.dumps(found) and "02005e" not in found["id"]
    other = _identity_in(netns, secrets.token_bytes(32))
    assert other["id"] != found["id"]
