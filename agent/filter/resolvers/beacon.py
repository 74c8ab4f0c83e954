"""The on-site beacon: TXT <nonce>.beacon.hedgerow.internal answered with a statement signed
by the site beacon key; and the laptop agent's self-check name (agent/filter/selfcheck.py),
A <label>.self.hedgerow.internal, when the spec holds its key. Names under hedgerow.internal
never go upstream."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from agent.filter import packet, selfcheck
from agent.filter.request import Outcome, Request
from agent.filter.verdict import Answer, Kind, Verdict

if TYPE_CHECKING:
    from common.wire.signing import SigningKey

ZONE = "hedgerow.internal"


class BeaconLink:
    """Signs beacon statements when this resolver holds the site's beacon key, and answers the
    self-check name when it holds the agent's self-check key."""

    name = "beacon"

    def __init__(
        self, site: str | None, key: SigningKey | None, self_check_key: bytes | None = None
    ) -> None:
        self.site = site
        self.key = key
        self.self_check_key = self_check_key

    def resolve(self, request: Request) -> Outcome:
        """Answer beacon queries; NXDOMAIN for the rest of our private zone."""
        q = request.query
        if not (q.qname == ZONE or q.qname.endswith("." + ZONE)):
            return None
        if self.self_check_key is not None:
            label = selfcheck.label_of(q.qname)
            if label is not None:
                return self._self_check(request, self.self_check_key, label)
        if self.key is None or self.site is None:
            verdict = Verdict(Kind.BEACON, request.group_name, rule="no beacon here")
            return Answer(packet.error(q, packet.NXDOMAIN), verdict)
        # Imported here, not at the top: common.beacon_statement brings cryptography, and a
        # filter without a beacon key (so without it loaded) never gets this far.
        from common import beacon_statement

        nonce = beacon_statement.nonce_of(q.qname)
        if nonce is None:
            verdict = Verdict(Kind.BEACON, request.group_name, rule="no beacon here")
            return Answer(packet.error(q, packet.NXDOMAIN), verdict)
        verdict = Verdict(Kind.BEACON, request.group_name, rule=f"site {self.site}")
        if q.qtype != packet.TXT:
            return Answer(packet.nodata(q), verdict)
        text = beacon_statement.make_statement(self.key, self.site, nonce, int(request.now * 1000))
        rdata = bytes([len(text)]) + text
        return Answer(packet.answer(q, (rdata,), 0), verdict)

    @staticmethod
    def _self_check(request: Request, key: bytes, label: str) -> Answer:
        q = request.query
        verdict = Verdict(Kind.BEACON, request.group_name, rule="self-check")
        if q.qtype != packet.A:
            return Answer(packet.nodata(q), verdict)
        address = ipaddress.IPv4Address(selfcheck.self_check_address(key, label)).packed
        # TTL 0: every check is a fresh label anyway, and nothing between may keep it.
        return Answer(packet.answer(q, (address,), 0), verdict)
