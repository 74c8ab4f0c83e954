"""Data the laptop agent ships inside the package (package data in pyproject.toml), each file
with a header saying where it came from and how to refresh it:

- `flagged_apps.txt`: process names of VPN clients, Tor and proxies (the default flagged list);
- `encrypted_dns_ips.txt`: the public encrypted-DNS resolvers' addresses and networks (DoH on 443).

A broken file is a bug in the release, so reading one raises ValueError naming the line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FLAGGED_APPS = "flagged_apps.txt"
ENCRYPTED_DNS_IPS = "encrypted_dns_ips.txt"
_VERSION_LINE = re.compile(r"version ([0-9A-Za-z.-]+)")
_APP_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]*")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressList:
    """A versioned list of addresses and networks, matched by `contains`."""

    version: str
    networks: tuple[Network, ...]

    def contains(self, address: str) -> bool:
        """Whether the address (IPv4 or IPv6 text) is on the list; False for anything else."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def _lines(filename: str) -> tuple[str, list[tuple[int, str]]]:
    """The file's version and (line number, text) of its other lines that are neither blank nor
    comments."""
    text = (Path(__file__).parent / filename).read_text(encoding="utf-8")  # package data
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append((number, line))
    version = _VERSION_LINE.fullmatch(lines[0][1]) if lines else None
    if version is None:
        raise ValueError(f"{filename}: the first line that is not a comment must be 'version X'")
    return version.group(1), lines[1:]


@cache
def flagged_apps() -> tuple[str, ...]:
    """The default flagged process names, lower case, in the file's order."""
    _, lines = _lines(FLAGGED_APPS)
    names: list[str] = []
    for number, line in lines:
        if _APP_NAME.fullmatch(line) is None or line in names:
            raise ValueError(f"{FLAGGED_APPS} line {number}: {line!r} is not a new lower-case name")
        names.append(line)
    return tuple(names)


@cache
def encrypted_dns_ips() -> AddressList:
    """The built-in list of public encrypted-DNS resolver addresses, with its version."""
    version, lines = _lines(ENCRYPTED_DNS_IPS)
    networks: list[Network] = []
    for number, line in lines:
        try:
            network = ipaddress.ip_network(line)
        except ValueError as exc:
            raise ValueError(f"{ENCRYPTED_DNS_IPS} line {number}: {line!r}: {exc}") from exc
        if network in networks:
            raise ValueError(f"{ENCRYPTED_DNS_IPS} line {number}: {line!r} is listed twice")
        networks.append(network)
    return AddressList(version, tuple(networks))
