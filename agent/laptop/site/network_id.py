"""Which network is this: a keyed hash of the default gateway's MAC address and the Wi-Fi
SSID, for the summaries. The hub can tell "the same network as yesterday" from "a new one"
without ever learning the raw values (a home router's MAC and SSID identify a household), and
without the key it cannot even test a guess. The raw values are never returned or logged.

Sources: /proc/net/route and /proc/net/ipv6_route (routes.py), the neighbour table in
/proc/net/arp, and `iw` or `nmcli` for the SSID when they are installed. Reading them may run
a tool for up to TOOL_TIMEOUT_S: call from a thread (asyncio.to_thread), not the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import socket
import subprocess
from pathlib import Path

from agent.laptop.site.routes import DefaultRoute, default_routes, read_proc

log = logging.getLogger(__name__)

CONTEXT = b"hedgerow-network/1\x00"
HASH_BYTES = 16
PROC_ARP = Path("/proc/net/arp")
TOOL_TIMEOUT_S = 2.0
_ARP_COMPLETE = 0x2


def identity_hash(
    key: bytes, *, gateway_mac: str | None, ssid: str | None, gateway: str | None = None
) -> str:
    """HMAC-SHA256 under `key` of the network's identity, first 16 bytes in hex. The gateway's
    address counts only when its MAC is unknown (an IPv6 gateway, an ARP entry not made yet)."""
    mac = gateway_mac.strip().lower() if gateway_mac else ""
    fields = (mac, ssid or "", "" if mac else (gateway or ""))
    message = bytearray(CONTEXT)
    for field in fields:
        raw = field.encode("utf-8", "surrogateescape")
        message += len(raw).to_bytes(2, "big") + raw  # length-prefixed: no two splits collide
    return hmac.new(key, bytes(message), hashlib.sha256).digest()[:HASH_BYTES].hex()


def parse_arp(text: str, address: str) -> str | None:
    """The MAC of `address` in the text of /proc/net/arp, if the entry is complete."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6 or fields[0] != address:
            continue
        try:
            complete = int(fields[2], 16) & _ARP_COMPLETE
        except ValueError:
            continue
        if complete and fields[3] != "00:00:00:00:00:00":
            return fields[3].lower()
    return None


def parse_iw_link(text: str) -> str | None:
    """The SSID in `iw dev DEV link` output ("Not connected." has none)."""
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name == "SSID":
            return value.strip() or None
    return None


def parse_nmcli_wifi(text: str) -> str | None:
    """The active SSID in `nmcli -t -f ACTIVE,SSID device wifi list` output (":" escaped)."""
    for line in text.splitlines():
        active, sep, ssid = line.partition(":")
        if sep and active == "yes":
            return ssid.replace("\\:", ":").replace("\\\\", "\\") or None
    return None


def default_gateway() -> str | None:
    """The default gateway's address (the preferred route that has one), or None."""
    route = _gateway_route()
    return route.gateway if route else None


def network_identity(key: bytes) -> str | None:
    """The keyed hash of the network we are on, or None when there is no default route."""
    route = _gateway_route()
    if route is None or route.gateway is None:
        return None
    mac = None
    if route.family == socket.AF_INET:
        mac = parse_arp(read_proc(PROC_ARP), route.gateway)
    return identity_hash(key, gateway_mac=mac, ssid=wifi_ssid(route.device), gateway=route.gateway)


def wifi_ssid(device: str) -> str | None:
    """The SSID `device` is joined to, if it is Wi-Fi and iw or nmcli can tell."""
    if not (Path("/sys/class/net") / device / "wireless").exists():
        return None
    if shutil.which("iw"):
        ssid = parse_iw_link(_run(["iw", "dev", device, "link"]))
        if ssid:
            return ssid
    if shutil.which("nmcli"):
        command = ["nmcli", "-t", "-f", "ACTIVE,SSID", "device", "wifi", "list"]
        return parse_nmcli_wifi(_run([*command, "ifname", device, "--rescan", "no"]))
    return None


def _gateway_route() -> DefaultRoute | None:
    # A VPN's device-only default route comes first when it is up; the network we stand on
    # is the one behind the first route with a gateway.
    return next((r for r in default_routes() if r.gateway is not None), None)


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s failed: %s", command[0], type(exc).__name__)  # never its output
        return ""
    return done.stdout if done.returncode == 0 else ""
