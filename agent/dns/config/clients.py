"""Reading [clients]: DHCP lease files and the static table of device names (docs/dns.md)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from agent.dns.arp import MAC
from agent.dns.config.model import LEASE_FORMATS, ClientsConfig, LeaseFile, StaticName
from common.tomlconfig import Section

# A device name the network manager writes: an asset tag or host name, not free text.
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def read_clients(root: Section) -> ClientsConfig:
    """[clients] of the file, or the empty default when there is none."""
    if not root.has("clients"):
        return ClientsConfig()
    sec = Section("clients", root.table("clients"), root.source)
    leases = []
    for index, table in enumerate(sec.tables("leases")):
        lsec = Section(f"clients.leases #{index + 1}", table, root.source)
        fmt = lsec.text(
            "format",
            check=lambda v: (
                None if v in LEASE_FORMATS else f"must be one of {', '.join(LEASE_FORMATS)}"
            ),
        )
        path = lsec.text("path", check=lambda v: None if v else "must be a file path")
        lsec.done()
        leases.append(LeaseFile(fmt, Path(path)))
    names = _names(sec.table("names", {}), root.source)
    check_s = sec.integer("check_s", 5, 1, 3600)
    sec.done()
    return ClientsConfig(tuple(leases), names, check_s)


def _names(raw: dict[str, object], source: str) -> tuple[StaticName, ...]:
    """`"10.1.2.34" = "lt-042"`, or `"10.1.2.34" = {name = "lt-042", mac = "02:..."}`."""
    sec = Section("clients.names", raw, source)
    out: dict[str, StaticName] = {}
    for key, value in raw.items():
        try:
            ip = ipaddress.ip_address(key).compressed
        except ValueError:
            sec.fail(key, value, 'the key must be a client IP address, e.g. "10.1.2.34"')
        mac = None
        if isinstance(value, dict):
            entry = Section(f'clients.names."{key}"', value, source)
            name = entry.text("name")
            mac_text = entry.optional_text("mac")
            entry.done()
            if mac_text is not None:
                mac = mac_text.lower().replace("-", ":")
                if not MAC.fullmatch(mac):
                    entry.fail("mac", mac_text, "must be a MAC address like 02:00:5e:10:00:01")
        else:
            name = sec.text(key, check=lambda _v: None)  # a string, or "must be a string"
        if not DEVICE_NAME.fullmatch(name):
            sec.fail(
                key, name, "a device name is 1 to 63 letters, digits, '.', '_' or '-', e.g. lt-042"
            )
        if ip in out:
            sec.fail(key, value, f"names the address {ip} a second time")
        out[ip] = StaticName(ip, name, mac)
    return tuple(out.values())
