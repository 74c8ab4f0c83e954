"""A cheap picture of the network (links up, addresses, default routes) for the network
watcher's polling fallback: when netlink cannot be opened, a change in this picture is the
change event.

Read from /proc and /sys alone (psutil stays in agent/laptop/activity/host.py, its one
importer): IPv4 addresses are the LOCAL host entries of /proc/net/fib_trie, IPv6 addresses
are /proc/net/if_inet6, links are /sys/class/net/*/flags.
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


def links_up() -> tuple[str, ...]:
    """The interfaces whose IFF_UP flag is set (Linux sysfs; empty elsewhere)."""
    up: list[str] = []
    try:
        links = sorted(SYS_NET.iterdir())
    except OSError:
        return ()
    for link in links:
        try:
            if int((link / "flags").read_text().strip(), 16) & _IFF_UP:
                up.append(link.name)
        except (OSError, ValueError):
            continue  # gone while we looked
    return tuple(up)


def snapshot() -> NetSnapshot:
    """The network as it is now (a handful of small /proc and /sys files)."""
    addresses = parse_fib_trie(read_proc(PROC_FIB_TRIE)) | parse_if_inet6(read_proc(PROC_IF_INET6))
    routes = tuple(f"{r.device} via {r.gateway or '-'}" for r in default_routes())
    return NetSnapshot(links_up(), tuple(sorted(addresses)), routes)
