"""Parsing DHCP lease files: dnsmasq, ISC dhcpd (IPv4 and IPv6) and Kea memfile CSV, into
address -> Lease.

A lease file is written from what clients send in DHCP, so every host name in it is
attacker-controlled: `clean_hostname` drops control and invisible characters and caps the length
before a name goes anywhere. A bad line is skipped and counted, never raised.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.dns.arp import MAC
from common.text import unsafe

MAX_HOSTNAME = 63  # a DHCP host name is one DNS label; an FQDN keeps its first 63 characters


@dataclass(frozen=True, slots=True)
class Lease:
    """One address bound to a device: its host name and MAC, when the lease gave them, and a
    DHCPv6 client's DUID (hex, colons)."""

    ip: str
    hostname: str | None = None
    mac: str | None = None
    duid: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A lease file's active leases by address, and how many entries could not be read."""

    leases: dict[str, Lease]
    bad: int = 0
    first_bad: int = 0  # line number of the first bad entry (0: none)


def clean_hostname(raw: str) -> str | None:
    """A host name safe to report: no control, format or invisible characters, whitespace
    collapsed, no trailing dot, at most MAX_HOSTNAME characters; None if nothing is left."""
    kept = []
    for ch in raw:
        if ch.isspace():
            kept.append(" ")  # tabs, newlines, separators: one space, collapsed below
        elif not unsafe(ch) and unicodedata.category(ch)[0] != "C":  # controls, format, unassigned
            kept.append(ch)
    text = "".join(kept)
    text = " ".join(text.split()).rstrip(".")
    return text[:MAX_HOSTNAME].rstrip() or None


def clean_mac(raw: str) -> str | None:
    """A MAC address as the payload writes it (lower-case, colons), or None."""
    mac = raw.strip().lower().replace("-", ":")
    return mac if MAC.fullmatch(mac) and mac != "00:00:00:00:00:00" else None


def canonical_ip(raw: str) -> str | None:
    """The address in its canonical text form, or None if it is not one."""
    try:
        return ipaddress.ip_address(raw.strip()).compressed
    except ValueError:
        return None


def parse_dnsmasq(text: str, now: float) -> Parsed:
    """dnsmasq.leases: `EXPIRY MAC IP HOSTNAME CLIENT-ID` per line (`*` for no name); IPv6
    lines follow a `duid` line and carry an IAID where the MAC would be. Expiry 0 is never."""
    leases: dict[str, Lease] = {}
    bad = first_bad = 0
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "duid":
            continue
        ip = canonical_ip(fields[2]) if len(fields) >= 4 else None
        if ip is None or not fields[0].isdigit():
            bad += 1
            first_bad = first_bad or number
            continue
        expiry = int(fields[0])
        if expiry and expiry < now:
            continue
        name = None if fields[3] == "*" else clean_hostname(fields[3])
        leases[ip] = Lease(ip, name, clean_mac(fields[1]))
    return Parsed(leases, bad, first_bad)


# dhcpd writes each block's closing brace at the start of a line and every string on one line
# (a byte outside printable ASCII as \ooo), so a block is `lease IP {` and its lines up to the
# next that starts with `}` (one that starts with `lease` instead: the block was cut short);
# nested blocks (`on expiry { ... }`) are indented. One regex per block and per
# statement: a token loop took 4 s for 20,000 leases here.
_ISC_BLOCK = re.compile(
    r"^lease[ \t]+(\S+)[ \t]*\{[ \t]*\n((?:(?!\}|lease\b|ia-na\b)[^\n]*\n)*)\}", re.M
)
_ISC_LEASE_START = re.compile(r"^lease\b", re.M)
# dhcpd -6 writes `ia-na "IAID+DUID" {` (one escaped string: 4 bytes of IAID, then the client's
# DUID) and, indented inside, an `iaaddr ADDRESS {` block per address with its own binding
# state and ends, cut short or not as an IPv4 lease is.
_ISC_IA_BLOCK = re.compile(
    r'^ia-na[ \t]+"((?:[^"\\\n]|\\.)*)"[ \t]*\{[ \t]*\n((?:(?!\}|lease\b|ia-na\b)[^\n]*\n)*)\}',
    re.M,
)
_ISC_IA_START = re.compile(r"^ia-na\b", re.M)
_ISC_IAADDR = re.compile(r"^[ \t]+iaaddr[ \t]+(\S+)[ \t]*\{[ \t]*$", re.M)
_ISC_STRING = r'"((?:[^"\\\n]|\\.)*)"'
# A DHCPv6 lease has no client-hostname unless a config's `on commit` sets one; what dhcpd does
# write is the client's FQDN option, or the name it registered in DNS (ddns-fwd-name).
_ISC_V6_NAMES = (
    re.compile(r"^[ \t]*client-hostname[ \t]+" + _ISC_STRING + r"[ \t]*;", re.M),
    re.compile(r"^[ \t]*option[ \t]+fqdn\.hostname[ \t]+" + _ISC_STRING + r"[ \t]*;", re.M),
    re.compile(r"^[ \t]*option[ \t]+fqdn\.fqdn[ \t]+" + _ISC_STRING + r"[ \t]*;", re.M),
    re.compile(r"^[ \t]*set[ \t]+ddns-fwd-name[ \t]*=[ \t]*" + _ISC_STRING + r"[ \t]*;", re.M),
)
MAX_DUID = 130  # RFC 8415: a DUID is at most 130 bytes (2 of type, 128 of identifier)
_ISC_STATE = re.compile(r"^[ \t]*binding[ \t]+state[ \t]+([a-z-]+)[ \t]*;", re.M)
_ISC_ENDS = re.compile(r"^[ \t]*ends[ \t]+([^;\n]*);", re.M)
_ISC_MAC = re.compile(r"^[ \t]*hardware[ \t]+ethernet[ \t]+([0-9A-Fa-f:]+)[ \t]*;", re.M)
_ISC_NAME = re.compile(r'^[ \t]*client-hostname[ \t]+"((?:[^"\\\n]|\\.)*)"[ \t]*;', re.M)
_ISC_TIME = re.compile(r"\d (\d{4})/(\d{1,2})/(\d{1,2}) (\d{1,2}):(\d{2}):(\d{2})")
_ISC_MARGIN = re.compile(r"[ \t#}]|[a-z][a-z0-9-]*(?:[ \t;{]|$)")
_INACTIVE = frozenset({"free", "expired", "released", "abandoned", "reset", "backup"})


def _isc_unescape(text: str) -> str:
    """dhcpd writes non-printable bytes of a string as \\ooo octal, and \\" \\\\ as such."""
    return re.sub(
        r"\\([0-7]{3}|.)",
        lambda m: chr(int(m.group(1), 8)) if len(m.group(1)) == 3 else m.group(1),
        text,
    )


def _isc_ended(text: str, now: float) -> bool:
    """True if an `ends` time has passed (`never` and the unreadable never do)."""
    words = text.split()
    if words[:1] == ["epoch"]:
        return len(words) > 1 and words[1].isdigit() and int(words[1]) < now
    match = _ISC_TIME.fullmatch(" ".join(words))
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    try:
        ends = datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:
        return False
    return ends < now


def _isc_inactive(body: str, now: float) -> bool:
    """True if a lease's (or an iaaddr's) statements say it is not bound now."""
    state = _ISC_STATE.search(body)
    ends = _ISC_ENDS.search(body)
    return (state is not None and state.group(1) in _INACTIVE) or (
        ends is not None and _isc_ended(ends.group(1), now)
    )


def _isc_bytes(text: str) -> bytes | None:
    """The bytes an escaped dhcpd string stands for; None if it holds a character that is not
    one (a file that was not ISC's, decoded with replacement characters)."""
    try:
        return _isc_unescape(text).encode("latin-1")
    except UnicodeEncodeError:
        return None


def duid_mac(duid: bytes) -> str | None:
    """The Ethernet MAC a DUID-LL or DUID-LLT (hardware type 1) was made from, else None."""
    kind, hardware = int.from_bytes(duid[:2]), int.from_bytes(duid[2:4])
    if hardware != 1:
        return None
    if kind == 1 and len(duid) == 14:  # type, hardware type, 4 bytes of time, the MAC
        return clean_mac(duid[8:].hex(":"))
    if kind == 3 and len(duid) == 10:  # type, hardware type, the MAC
        return clean_mac(duid[4:].hex(":"))
    return None


def _isc_v6(ia: re.Match[str], now: float) -> tuple[list[tuple[str, Lease | None]], bool]:
    """The addresses of one `ia-na` block, each with its lease (None: not bound now, which
    replaces an earlier lease of it), and False if the block is not in dhcpd's format."""
    iaid_duid = _isc_bytes(ia.group(1))
    if iaid_duid is None or not 4 + 3 <= len(iaid_duid) <= 4 + MAX_DUID:
        return [], False
    duid = iaid_duid[4:]
    body = ia.group(2)
    heads = list(_ISC_IAADDR.finditer(body))
    outer = body[: heads[0].start()] if heads else body  # the IA's own statements
    found: list[tuple[str, Lease | None]] = []
    for i, head in enumerate(heads):
        ip = canonical_ip(head.group(1))
        if ip is None or ":" not in ip:
            return [], False
        inner = body[head.end() : heads[i + 1].start() if i + 1 < len(heads) else len(body)]
        if _isc_inactive(inner, now):
            found.append((ip, None))
            continue
        name = next(
            (m for m in (p.search(part) for part in (inner, outer) for p in _ISC_V6_NAMES) if m),
            None,
        )
        hostname = clean_hostname(_isc_unescape(name.group(1))) if name else None
        found.append((ip, Lease(ip, hostname, duid_mac(duid), duid.hex(":"))))
    return found, True


def parse_isc(text: str, now: float) -> Parsed:
    """ISC dhcpd.leases: `lease IP { ... }` blocks (IPv4) and `ia-na` blocks with their
    `iaaddr` addresses (IPv6, dhcpd -6), appended as they change, so the last block for an
    address wins. Only `binding state active` (or no state) leases that have not ended count;
    `hardware ethernet` and `client-hostname` give an IPv4 lease's MAC and name; an IPv6
    lease's name is its `client-hostname`, `option fqdn.hostname`, `option fqdn.fqdn` or
    `ddns-fwd-name`, and its MAC the one its DUID was made from, if any. Other blocks (host,
    failover, server-duid, ia-ta, ia-pd) are skipped; a `lease` or `ia-na` that is not a whole
    block (a bad address or DUID, no closing brace) is a bad entry."""
    leases: dict[str, Lease] = {}
    bad_lines: list[int] = []
    starts = {m.start() for m in _ISC_LEASE_START.finditer(text)}
    starts |= {m.start() for m in _ISC_IA_START.finditer(text)}
    blocks = sorted([*_ISC_BLOCK.finditer(text), *_ISC_IA_BLOCK.finditer(text)], key=_start)
    for block in blocks:
        starts.discard(block.start())
        if block.re is _ISC_IA_BLOCK:
            found, readable = _isc_v6(block, now)
            if not readable:
                bad_lines.append(text.count("\n", 0, block.start()) + 1)
            for address, lease in found:
                leases.pop(address, None)  # the later block replaces the earlier
                if lease is not None:
                    leases[address] = lease
            continue
        ip = canonical_ip(block.group(1))
        if ip is None:
            bad_lines.append(text.count("\n", 0, block.start()) + 1)
            continue
        leases.pop(ip, None)  # the later block replaces the earlier
        body = block.group(2)
        if _isc_inactive(body, now):
            continue
        mac = _ISC_MAC.search(body)
        name = _ISC_NAME.search(body)
        leases[ip] = Lease(
            ip,
            clean_hostname(_isc_unescape(name.group(1))) if name else None,
            clean_mac(mac.group(1)) if mac else None,
        )
    # `lease` or `ia-na` with no whole block
    bad_lines += [text.count("\n", 0, start) + 1 for start in starts]
    # Outside the blocks (kept as blank lines, so the numbers stay), a line at the margin is a
    # statement (`server-duid`, `host x {`...), a closing brace or a comment: else junk.
    outside = text
    for pattern in (_ISC_BLOCK, _ISC_IA_BLOCK):
        outside = pattern.sub(lambda m: "\n" * m.group().count("\n"), outside)
    for number, line in enumerate(outside.splitlines(), 1):
        if line and not _ISC_MARGIN.match(line):
            bad_lines.append(number)
    return Parsed(leases, len(bad_lines), min(bad_lines, default=0))


def _start(match: re.Match[str]) -> int:
    return match.start()


def _kea_field(text: str) -> str:
    """Kea's memfile escapes a comma as `&#x2c` (and itself as `&#x26`)."""
    return text.replace("&#x2c", ",").replace("&#x26", "&")


def parse_kea(text: str, now: float) -> Parsed:
    """Kea memfile CSV (kea-leases4.csv or kea-leases6.csv; the header says which columns):
    appended as leases change, so the last row for an address wins; a row whose state is not
    0 (default), whose valid lifetime is 0 or whose expiry has passed removes the lease."""
    lines = text.splitlines()
    header = lines[0].split(",") if lines else []
    if "address" not in header or "expire" not in header:
        return Parsed({}, 1, 1) if text.strip() else Parsed({})
    column = {name: index for index, name in enumerate(header)}
    leases: dict[str, Lease] = {}
    bad = first_bad = 0
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split(",")

        def get(key: str, fields: list[str] = fields) -> str:
            index = column.get(key, len(fields))
            return _kea_field(fields[index]) if index < len(fields) else ""

        ip = canonical_ip(get("address"))
        expire, lifetime, state = get("expire"), get("valid_lifetime"), get("state") or "0"
        if ip is None or not expire.isdigit() or not (lifetime or "0").isdigit():
            bad += 1
            first_bad = first_bad or number
            continue
        leases.pop(ip, None)
        if state != "0" or lifetime == "0" or int(expire) < now:
            continue
        hostname = get("hostname")
        leases[ip] = Lease(
            ip, clean_hostname(hostname) if hostname else None, clean_mac(get("hwaddr"))
        )
    return Parsed(leases, bad, first_bad)


PARSERS: dict[str, Callable[[str, float], Parsed]] = {
    "dnsmasq": parse_dnsmasq,
    "isc": parse_isc,
    "kea": parse_kea,
}
