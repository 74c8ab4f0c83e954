"""The annual filtering check (DfE filtering standards): ask the running server, as each group,
for samples of every category the group blocks right now, its SafeSearch names and the bypass
canaries, and compare each reply with what the configuration says it should be.

A group is asked from a source address inside its client ranges, which only works where that
address belongs to this host (all of 127.0.0.0/8 does); otherwise the group is reported as not
testable from here, which is not a pass.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from agent.dns.config import DnsConfig
from agent.dns.service import Loaded
from agent.filter import dnscodec, packet
from agent.filter.groups import GroupPolicy, build_policy, mask_of
from agent.filter.lists import ListError
from agent.filter.lists.load import readable_copy
from agent.filter.lists.model import SELF_BLOCK
from agent.filter.lists.parser import read_lines
from agent.filter.lists.rules import detect_format, parse_line

SAMPLES = 3  # names per category
SAFESEARCH_NAMES = ("www.google.com", "www.youtube.com", "www.bing.com", "duckduckgo.com")
BYPASS_NAMES = ("use-application-dns.net", "mask.icloud.com")
ENCRYPTED_DNS_SAMPLES = ("dns.google", "cloudflare-dns.com")  # on the built-in resolver list


@dataclass(frozen=True, slots=True)
class Check:
    """One question asked as one group: what the config expects and what came back."""

    what: str  # a category, "safesearch", "youtube" or "bypass"
    name: str
    expected: str
    got: str
    ok: bool


@dataclass(frozen=True, slots=True)
class GroupResult:
    """Every check for one group, or why the group could not be tested from this host."""

    group: str
    source: str | None  # the address we asked from
    testable: bool
    note: str
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class Expectation:
    """A question and what a correct reply looks like."""

    what: str
    name: str
    qtype: int
    kind: str  # "blocked", "cname" or "nxdomain"
    target: str = ""  # the CNAME target, or the blocked address

    @property
    def text(self) -> str:
        """How the expectation reads in the report."""
        if self.kind == "cname":
            return f"CNAME {self.target}"
        if self.kind == "nxdomain":
            return "NXDOMAIN"
        return f"blocked ({self.target})"


def samples(loaded: Loaded, category: str, count: int = SAMPLES) -> list[str]:
    """The first `count` names of the category's lists that the index really blocks."""
    config = loaded.config
    bit = 1 << loaded.index.categories.index(category)
    found: list[str] = []
    for spec in config.lists:
        if spec.category != category:
            continue
        with readable_copy(spec, config.server.list_cache_dir) as path:
            for name in _self_blocked(path, spec.source):
                if loaded.index.lookup(name) & bit and name not in found:
                    found.append(name)
                    if len(found) >= count:
                        return found
    return found


def _self_blocked(path: Path, source: str) -> Iterator[str]:
    fmt: str | None = None
    for text in read_lines(path, source):
        if fmt is None:
            fmt = detect_format(text[: 1 << 16])
        for line in text.split("\n"):
            for entry, kind in parse_line(fmt, line).entries:
                if kind & SELF_BLOCK:
                    yield entry


def expectations(loaded: Loaded, group: GroupPolicy, now: float) -> list[Expectation]:
    """What the config says this group should see right now."""
    config = loaded.config
    index = loaded.index
    mask = group.block_mask(now)
    for category in config.statutory:
        if category in index.categories:
            mask |= 1 << index.categories.index(category)
    qtype, blocked = _blocked_form(config)
    out: list[Expectation] = []
    for position, category in enumerate(index.categories):
        if not mask >> position & 1:
            continue
        names = [
            n
            for n in samples(loaded, category)
            if category in config.statutory or not group.allowed_by(n)
        ]
        if not names:
            out.append(Expectation(category, "", qtype, "blocked", blocked))
        out.extend(Expectation(category, name, qtype, "blocked", blocked) for name in names)
    for name in SAFESEARCH_NAMES:
        target = group.rewrites.get(name)
        if target is not None:
            what = "youtube" if "youtube" in name else "safesearch"
            out.append(Expectation(what, name, packet.A, "cname", target))
    if group.block_bypass:
        out.extend(_canary(loaded, group, mask, name, qtype, blocked) for name in BYPASS_NAMES)
    if group.block_encrypted_dns:  # the built-in list of public DoH/DoT resolvers
        names = [n for n in ENCRYPTED_DNS_SAMPLES if group.allowed_by(n) is None]
        out.extend(_canary(loaded, group, mask, name, qtype, blocked) for name in names)
    return out


def _canary(
    loaded: Loaded, group: GroupPolicy, mask: int, name: str, qtype: int, blocked: str
) -> Expectation:
    """A bypass canary's expectation: NXDOMAIN from the anti-bypass link, unless a list the
    group blocks has the name (a bypass or vpn list often does), since lists decide first
    (agent/filter/chain.py): then the blocked answer is the right one."""
    listed = loaded.index.lookup(name) & mask
    statutory = listed & mask_of(loaded.index, loaded.config.statutory)
    if statutory or (listed and not group.allowed_by(name)):
        return Expectation("bypass", name, qtype, "blocked", blocked)
    return Expectation("bypass", name, packet.A, "nxdomain")


def _blocked_form(config: DnsConfig) -> tuple[int, str]:
    mode = config.blocked_answer
    if mode == "null":
        return packet.A, "0.0.0.0"
    if mode == "nxdomain":
        return packet.A, "NXDOMAIN"
    return (packet.AAAA if ":" in mode else packet.A), str(ipaddress.ip_address(mode))


def verdict_of(expect: Expectation, reply: bytes | None) -> tuple[bool, str]:
    """Whether a reply meets the expectation, and the reply in a few words."""
    if reply is None:
        return False, "no reply"
    try:
        rcode, answers, edes = dnscodec.read_reply(reply)
    except packet.PacketError as exc:
        return False, str(exc)
    names = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
    got = names.get(rcode, f"rcode {rcode}")
    if answers:
        first = answers[0]
        got += f" {_TYPE_NAMES.get(first[0], first[0])} {first[1]}"
    if edes:
        got += f" (EDE {', '.join(map(str, edes))})"
    if expect.kind == "nxdomain":
        return rcode == packet.NXDOMAIN, got
    if expect.kind == "cname":
        ok = (
            rcode == packet.NOERROR
            and bool(answers)
            and answers[0] == (packet.CNAME, expect.target + ".")
        )
        return ok, got
    blocked = packet.EDE_BLOCKED in edes
    if expect.target == "NXDOMAIN":
        return rcode == packet.NXDOMAIN and blocked, got
    addresses = [text for rtype, text in answers if rtype in (packet.A, packet.AAAA)]
    return rcode == packet.NOERROR and addresses == [expect.target] and blocked, got


_TYPE_NAMES = {packet.A: "A", packet.AAAA: "AAAA", packet.CNAME: "CNAME"}


def answering(server: tuple[str, int], timeout: float) -> bool:
    """Whether a DNS server answers at `server` at all: one question, from any local address,
    for a name the filter answers itself and never forwards. A connected socket hears the
    port-unreachable error at once when nothing listens there."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    msg_id = secrets.randbelow(0x10000)
    question = packet.query_message(
        msg_id, "selftest.hedgerow.internal", packet.A, packet.CLASS_IN, False
    )
    for _ in range(2):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(server)
                sock.send(question)
                while True:
                    reply = sock.recv(65535)
                    if len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == msg_id:
                        return True
            except TimeoutError:
                continue
            except OSError:  # refused (nothing listens), unreachable, no route
                return False
    return False


def ask(
    server: tuple[str, int], source: str, name: str, qtype: int, timeout: float
) -> bytes | None:
    """One query over UDP from `source` (two tries); the reply, or None."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    for _ in range(2):
        msg_id = secrets.randbelow(0x10000)
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.bind((source, 0))
            sock.sendto(packet.query_message(msg_id, name, qtype, packet.CLASS_IN, False), server)
            try:
                while True:
                    reply = sock.recv(65535)
                    if len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == msg_id:
                        return reply
            except TimeoutError:
                continue
    return None


def local_addresses() -> list[str]:
    """Addresses assigned to this host's interfaces."""
    out: list[str] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                out.append(address.address.split("%", 1)[0])
    return out


def source_for(config: DnsConfig, group: str, server_host: str, local: list[str]) -> str | None:
    """An address of this host that the server would put in `group`, in the server's family."""
    policy = build_policy(config.spec, _NoLists())
    v6 = ":" in server_host
    candidates: list[str] = []
    ranges = [net for g in config.groups for net in g.clients]
    for net in [*ranges, *config.server.allow_clients]:
        if net.version == 4 and net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            candidates.append(str(net.network_address + (1 if net.num_addresses > 1 else 0)))
        elif net.version == 6 and net.num_addresses == 1 and net.network_address.is_loopback:
            candidates.append(str(net.network_address))
    candidates += ["127.0.0.1", "::1", *local]
    for address in candidates:
        if (":" in address) != v6:
            continue
        found = policy.clients.classify(address)
        if found is None or found.name != group:
            continue
        if address in local or ipaddress.ip_address(address).is_loopback:
            return address
    return None


class _NoLists:
    """A stand-in index for building client tables (which need no lists)."""

    categories: tuple[str, ...] = ()

    def lookup(self, qname: str) -> int:
        """Nothing is listed."""
        return 0


def run(
    loaded: Loaded, server: tuple[str, int], now: float, timeout: float = 2.0
) -> list[GroupResult]:
    """Ask every check for every group and collect the results."""
    config = loaded.config
    policy = build_policy(config.spec, loaded.index)
    local = local_addresses()
    results: list[GroupResult] = []
    for group_config in config.groups:
        name = group_config.name
        source = source_for(config, name, server[0], local)
        if source is None:
            ranges = ", ".join(str(n) for n in group_config.clients) or "no clients range"
            results.append(
                GroupResult(
                    name, None, False, f"not testable from this host: no local address in {ranges}"
                )
            )
            continue
        try:
            plan = expectations(loaded, policy.groups[name], now)
        except ListError as exc:
            results.append(GroupResult(name, source, False, f"lists unreadable: {exc}"))
            continue
        checks = []
        for expect in plan:
            if not expect.name:
                checks.append(
                    Check(expect.what, "", expect.text, "no sample name in its lists", False)
                )
                continue
            ok, got = verdict_of(expect, ask(server, source, expect.name, expect.qtype, timeout))
            checks.append(Check(expect.what, expect.name, expect.text, got, ok))
        results.append(GroupResult(name, source, True, f"asked from {source}", tuple(checks)))
    return results
