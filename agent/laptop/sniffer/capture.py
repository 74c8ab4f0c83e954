"""Packet capture with scapy: the only module that imports it, and only the sniffer child
process loads it (scapy costs ~45-50 MB resident). Packets become `Observed` here."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scapy.config import conf
from scapy.error import Scapy_Exception
from scapy.layers.dns import DNS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet
from scapy.sendrecv import sniff
from scapy.utils import rdpcap

from agent.laptop.sniffer.client_hello import server_name
from agent.laptop.sniffer.errors import NoInterface, NoLibpcap, SnifferError
from agent.laptop.sniffer.observed import Observed

log = logging.getLogger(__name__)

IFF_UP = 0x1

# Only DNS (53), DoT (tcp 853) and DoQ (udp 853, 8853, 784) reach us: the kernel drops the rest
# before it is copied to user space, which keeps the child cheap on a busy laptop.
# (pcap's "and" and "or" bind equally tightly, left to right: hence every bracket.)
BPF_FILTER = (
    "((udp or tcp) and port 53)"
    " or (tcp and port 853)"
    " or (udp and (port 853 or port 8853 or port 784))"
)


def _qname(pkt: Packet) -> str | None:
    """The first question's name, without the final dot, or None."""
    if not pkt.haslayer(DNS):
        return None
    try:
        questions = pkt[DNS].qd
        if not questions:
            return None
        raw = questions[0].qname
    except (AttributeError, IndexError, TypeError):
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    return text.rstrip(".").lower() or "."


def from_scapy(pkt: Packet) -> Observed | None:
    """Our Observed for an IPv4/IPv6 TCP or UDP packet, None for anything else."""
    if pkt.haslayer(IP):
        ip: Any = pkt[IP]
    elif pkt.haslayer(IPv6):
        ip = pkt[IPv6]
    else:
        return None
    if ip.haslayer(TCP):
        proto, l4 = "tcp", ip[TCP]
    elif ip.haslayer(UDP):
        proto, l4 = "udp", ip[UDP]
    else:
        return None
    sni = None
    if proto == "tcp" and not l4.haslayer(DNS):
        sni = server_name(bytes(l4.payload))
    return Observed(proto, str(ip.src), str(ip.dst), int(l4.sport), int(l4.dport), _qname(l4), sni)


def read_pcap(path: Path | str) -> list[Observed]:
    """The Observed packets in a pcap file, in order; packets that are not TCP/UDP are left out."""
    out = []
    for pkt in rdpcap(str(path)):
        obs = from_scapy(pkt)
        if obs is not None:
            out.append(obs)
    return out


def interfaces_up(sys_net: Path = Path("/sys/class/net")) -> list[str]:
    """The interfaces that are up now: a capture socket on one that is down fails (ENETDOWN)."""
    names = []
    for entry in sorted(sys_net.iterdir()):
        try:
            flags = int((entry / "flags").read_text(encoding="ascii").strip(), 16)
        except (OSError, ValueError):
            continue
        if flags & IFF_UP:
            names.append(entry.name)
    return names


def capture(
    interface: str | None,
    on_observed: Callable[[Observed], None],
    on_started: Callable[[], None],
) -> None:
    """Sniff DNS, DoT and DoQ packets on `interface` (every interface up now when None)
    until the process is stopped, calling `on_observed` for each; `on_started` once the
    capture sockets are open. Raises NoLibpcap, NoInterface, SnifferError, PermissionError."""
    conf.sniff_promisc = False  # our own traffic is all we look at; never the neighbours'
    ifaces: str | list[str] = interface if interface is not None else interfaces_up()

    def handle(pkt: Packet) -> None:
        try:
            obs = from_scapy(pkt)
        except Exception:  # one odd packet must not end the capture
            log.exception("cannot read a packet")
            return
        if obs is not None:
            on_observed(obs)

    try:
        sniff(
            iface=ifaces,
            filter=BPF_FILTER,
            prn=handle,
            store=False,
            started_callback=on_started,
        )
    except Scapy_Exception as exc:
        if "libpcap" in str(exc):
            raise NoLibpcap(str(exc)) from exc
        raise SnifferError(str(exc)) from exc
    except ValueError as exc:
        # scapy's resolve_iface: "Interface 'x' not found !"
        if "not found" in str(exc):
            raise NoInterface(str(exc)) from exc
        raise
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise NoInterface(f"{interface}: {exc}") from exc
        raise
