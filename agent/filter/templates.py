"""Reply templates: a fixed answer precomputed for every kind of client, so the fast path
replies with four byte slices joined (ID + head + the client's question + tail).

A reply depends on the query only through its ID, its question, three client flag bits (RD,
AD, CD) and its EDNS state (none, EDNS, EDNS with DO): 24 variants. Templates are made by
running the full path's own builders on a stand-in query of each variant and cutting the result
around the question, so a templated reply is byte-identical to the built one by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.filter import packet

VARIANTS = 24
_STAND_IN = packet.question_bytes("template.invalid", packet.A, packet.CLASS_IN)
_QSTART = packet.HEADER_LEN
_QEND = packet.HEADER_LEN + len(_STAND_IN)


def variant_of(flags_hi: int, flags_lo: int, edns_state: int) -> int:
    """The variant of a query from its two flag bytes and EDNS state (0 none, 1, 2 with DO)."""
    return edns_state << 3 | (flags_hi & 1) << 2 | (flags_lo & 0x30) >> 4


def stand_in(variant: int, qtype: int) -> packet.Query:
    """A query of the given variant and type, with a placeholder question."""
    edns_state, bits = divmod(variant, 8)
    flags = (0x0100 if bits & 4 else 0) | (0x0020 if bits & 2 else 0) | (0x0010 if bits & 1 else 0)
    return packet.Query(
        0, flags, "template.invalid", qtype, packet.CLASS_IN, _STAND_IN,
        edns=edns_state > 0, udp_size=packet.OUR_UDP_SIZE, do=edns_state == 2,
    )  # fmt: skip


def cut(wire: bytes) -> tuple[bytes, bytes]:
    """(head, tail) of a reply built for a stand-in query: header bytes 2..12, and what follows
    the question."""
    return wire[2:_QSTART], wire[_QEND:]


class Template:
    """One fixed reply in its 24 variants."""

    __slots__ = ("heads", "tails")

    def __init__(self, build: Callable[[packet.Query], bytes], qtype: int) -> None:
        parts = [cut(build(stand_in(v, qtype))) for v in range(VARIANTS)]
        self.heads = tuple(head for head, _ in parts)
        self.tails = tuple(tail for _, tail in parts)

    def reply(self, data: bytes, qend: int, variant: int) -> bytes:
        """The reply to `data`, whose question ends at `qend`."""
        return b"".join((data[:2], self.heads[variant], data[12:qend], self.tails[variant]))
