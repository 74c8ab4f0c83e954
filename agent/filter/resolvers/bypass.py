"""Anti-bypass: names browsers and phones use to switch to their own encrypted DNS or relay,
the public encrypted-DNS resolvers themselves (the built-in list, agent/filter/data/
encrypted_dns.txt), and HTTPS/SVCB records (ECH) where the group blocks encrypted client hello.

Blocked bypass names carry the shared category ANTI_BYPASS ("bypass", common/categories.py),
which the hub's bypass rule covers: reports name it, and the hub raises a bypass alert."""

from __future__ import annotations

from agent.filter import packet
from agent.filter.data import ResolverList, encrypted_dns
from agent.filter.request import Outcome, Request
from agent.filter.verdict import Answer, Kind, Verdict
from common.categories import ANTI_BYPASS

# NXDOMAIN tells the product to stay on the network's resolver.
NXDOMAIN_NAMES = {
    "use-application-dns.net": "Firefox DoH canary",
    "mask.icloud.com": "iCloud Private Relay",
    "mask-h2.icloud.com": "iCloud Private Relay",
}
DDR_ZONE = "resolver.arpa"  # RFC 9462 discovery of designated (encrypted) resolvers
EDE_TEXT = "filtered: anti-bypass"


class BypassLink:
    """NXDOMAIN for canaries and public encrypted-DNS resolvers, NODATA for resolver.arpa and
    (with block_ech) HTTPS/SVCB."""

    name = "bypass"

    def __init__(self, resolvers: ResolverList | None = None) -> None:
        self.resolvers = encrypted_dns() if resolvers is None else resolvers
        self._resolver_rule = f"encrypted DNS resolver (built-in list {self.resolvers.version})"

    def resolve(self, request: Request) -> Outcome:
        """Answer bypass names; pass everything else on."""
        group = request.group
        if group is None or not (
            group.block_bypass or group.block_ech or group.block_encrypted_dns
        ):
            return None
        q = request.query
        # A group's allow entry may let one resolver through (a device that must use it); the
        # canaries and DDR below are signals, never sites, so allow does not touch them.
        if group.block_encrypted_dns and request.allowed_by is None:
            listed = self.resolvers.match(q.qname)
            if listed is not None:
                verdict = Verdict(
                    Kind.BYPASS, group.name, ANTI_BYPASS, f"{self._resolver_rule}: {listed}"
                )
                ede = (packet.EDE_FILTERED, EDE_TEXT)
                return Answer(packet.error(q, packet.NXDOMAIN, ede), verdict)
        if group.block_bypass:
            reason = NXDOMAIN_NAMES.get(q.qname)
            if reason is not None:
                verdict = Verdict(Kind.BYPASS, group.name, ANTI_BYPASS, reason)
                ede = (packet.EDE_FILTERED, EDE_TEXT)
                return Answer(packet.error(q, packet.NXDOMAIN, ede), verdict)
            if q.qname == DDR_ZONE or q.qname.endswith("." + DDR_ZONE):
                verdict = Verdict(Kind.BYPASS, group.name, ANTI_BYPASS, "DDR (resolver.arpa)")
                return Answer(packet.nodata(q, (packet.EDE_FILTERED, EDE_TEXT)), verdict)
        if group.block_ech and q.qtype in (packet.HTTPS, packet.SVCB):
            verdict = Verdict(Kind.FILTERED, group.name, "ech", "block_ech")
            ede = (packet.EDE_FILTERED, "filtered: HTTPS/SVCB withheld (ECH)")
            return Answer(packet.nodata(q, ede), verdict)
        return None
