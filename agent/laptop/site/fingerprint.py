"""A cheap picture of the network (links and their state, addresses, default routes): the
network watcher compares it when netlink says something changed, and polls it when netlink
cannot be opened. Only a change in this picture starts a site check, so what the kernel merely
repeats (an IPv6 address whose lifetime a router advertisement refreshed, a route
re-announced, a Wi-Fi link's wireless events) does not.

Read from /proc and /sys alone (psutil stays in agent/laptop/activity/host.py, its one
importer): IPv4 addresses are the LOCAL host entries of /proc/net/fib_trie, IPv6 addresses
are /proc/net/if_inet6, links are /sys/class/net/*/flags and carrier.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from agent.laptop.site.routes import default_routes, read_proc

PROC_FIB_TRIE = Path("/proc/net/fib_trie")
PROC_IF_INET6 = Path("/proc/net/if_inet6")
SYS_NET = Path("/sys/class/net")
_IFF_UP = 0x1


@dataclass(frozen=True, slots=True)
class NetSnapshot:
    """What the site check depends on, comparable with ==."""

    links: tuple[str, ...]  # "eth0 up carrier", "wlan0 up", "hwA down"
    links_up: tuple[str, ...]
    addresses: tuple[str, ...]  # "192.0.2.7", "eth0 2001:db8::7"
    default_routes: tuple[str, ...]  # "eth0 via 192.0.2.1", "tun0 via -"


def parse_fib_trie(text: str) -> set[str]:
    """This host's own IPv4 addresses: the entries of /proc/net/fib_trie marked "host LOCAL"."""
    found: set[str] = set()
    last: str | None = None
    for line in text.splitlines():
        item = line.strip()
        if item.startswith("|-- "):
            last = item[4:]
        elif last is not None and item.startswith("/32 host LOCAL"):
            found.add(last)
    return found


def parse_if_inet6(text: str) -> set[str]:
    """ "dev address" for each line of /proc/net/if_inet6."""
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6:
            continue
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        except ValueError:
            continue
        found.add(f"{fields[5]} {address}")
    return found


def _flags(link: Path) -> int | None:
    try:
        return int((link / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return None  # gone while we looked


def _carrier(link: Path) -> bool:
    try:
        return (link / "carrier").read_text().strip() == "1"
    except OSError:
        return False  # reading carrier of a link that is down fails with EINVAL


def _links() -> list[tuple[str, int]]:
    try:
        links = sorted(SYS_NET.iterdir())
    except OSError:
        return []
    found: list[tuple[str, int]] = []
    for link in links:
        flags = _flags(link)
        if flags is not None:
            found.append((link.name, flags))
    return found


def links_up() -> tuple[str, ...]:
    """The interfaces whose IFF_UP flag is set (Linux sysfs; empty elsewhere)."""
    return tuple(name for name, flags in _links() if flags & _IFF_UP)


def link_states() -> tuple[str, ...]:
    """Every interface with whether it is up and has a carrier: a cable pulled or a Wi-Fi
    network left shows here before any address or route goes."""
    states: list[str] = []
    for name, flags in _links():
        if not flags & _IFF_UP:
            states.append(f"{name} down")
        else:
            carrier = " carrier" if _carrier(SYS_NET / name) else ""
            states.append(f"{name} up{carrier}")
    return tuple(states)


def snapshot() -> NetSnapshot:
    """The network as it is now (a handful of small /proc and /sys files)."""
    addresses = parse_fib_trie(read_proc(PROC_FIB_TRIE)) | parse_if_inet6(read_proc(PROC_IF_INET6))
    routes = tuple(f"{r.device} via {r.gateway or '-'}" for r in default_routes())
    states = link_states()
    up = tuple(state.split(" ", 1)[0] for state in states if " up" in state)
    return NetSnapshot(states, up, tuple(sorted(addresses)), routes)
