"""Access control: only clients inside [server] allow_clients get answers (never an open
resolver); this also finds the client's group. Classes other than IN are refused."""

from __future__ import annotations

from agent.filter import packet
from agent.filter.groups import ClientTable
from agent.filter.request import Outcome, Request
from agent.filter.verdict import Answer, Kind, Verdict

OUTSIDER = Verdict(Kind.REFUSED, rule="allow_clients")


class AccessLink:
    """REFUSED for outsiders and non-IN classes; otherwise sets request.group."""

    name = "access"

    def __init__(self, clients: ClientTable) -> None:
        self.clients = clients

    def resolve(self, request: Request) -> Outcome:
        """Classify the client."""
        group = self.clients.classify(request.client)
        if group is None:
            return Answer(packet.error(request.query, packet.REFUSED), OUTSIDER)
        request.group = group
        if request.query.qclass != packet.CLASS_IN:
            verdict = Verdict(Kind.REFUSED, group.name, rule="class")
            return Answer(packet.error(request.query, packet.REFUSED), verdict)
        return None
