"""A query on its way down the resolver chain, and the contract every link follows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from agent.filter import packet
from agent.filter.groups import GroupPolicy
from agent.filter.verdict import Answer, Verdict


class Request:
    """One query on its way down the chain; links note what they found on it."""

    __slots__ = ("allowed_by", "client", "group", "hits", "metered", "now", "query", "transport")

    def __init__(self, query: packet.Query, client: str, transport: str, now: float) -> None:
        self.query = query
        self.client = client
        self.transport = transport  # "udp" or "tcp"
        self.now = now  # epoch seconds, from the chain's clock
        self.group: GroupPolicy | None = None  # set by the access link
        self.hits = -1  # category bitmask of the name, looked up once (-1: not yet)
        self.allowed_by: str | None = None  # the group allow entry that matched, if any
        self.metered = False  # the fast path already spent this query's rate-limit token

    @property
    def group_name(self) -> str:
        """The client's group, or '' before (or without) classification."""
        return self.group.name if self.group else ""


Done = Callable[[Answer], None]


@dataclass(frozen=True, slots=True)
class Pending:
    """An answer that needs the network; `verdict` says what will happen (for explain).

    `run` gives it as a coroutine. `start`, when a link has it, gives it through a callback
    instead, with no task, coroutine or timer of its own (the cache-miss path: the server
    prefers it); `start(done)` calls `done(answer)` once, later, or never if the answer is
    abandoned (the server stopping), and raises nothing itself."""

    verdict: Verdict
    run: Callable[[], Awaitable[Answer]]
    start: Callable[[Done], None] | None = None


Outcome = Answer | Pending | None


class Link(Protocol):
    """One step of the chain: answer (now or later), or return None to pass the query on."""

    name: str

    def resolve(self, request: Request) -> Outcome:
        """Decide on the request."""
        ...
