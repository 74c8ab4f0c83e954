"""The on-site beacon: TXT <nonce>.beacon.hedgerow.internal answered with a statement signed
by the site beacon key. Names under hedgerow.internal never go upstream."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.filter import packet
from agent.filter.request import Outcome, Request
from agent.filter.verdict import Answer, Kind, Verdict

if TYPE_CHECKING:
    from common.wire.signing import SigningKey

ZONE = "hedgerow.internal"


class BeaconLink:
    """Signs beacon statements when this resolver holds the site's beacon key."""

    name = "beacon"

    def __init__(self, site: str | None, key: SigningKey | None) -> None:
        self.site = site
        self.key = key

    def resolve(self, request: Request) -> Outcome:
        """Answer beacon queries; NXDOMAIN for the rest of our private zone."""
        q = request.query
        if not (q.qname == ZONE or q.qname.endswith("." + ZONE)):
            return None
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
