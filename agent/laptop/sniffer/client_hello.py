"""The server name (SNI) in a TLS ClientHello, read from the first bytes of a TCP stream
without a TLS library: DoT's ClientHello names the resolver it is going to."""

from __future__ import annotations

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME_EXT = 0
_HOST_NAME = 0


class _Reader:
    """Reads big-endian fields from bytes; IndexError when they run out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def block(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))


def server_name(payload: bytes) -> str | None:
    """The host name in a TLS ClientHello's server_name extension, lower case; None when the
    payload is not a ClientHello carrying one (or is cut short by the segment)."""
    try:
        record = _Reader(payload)
        if record.number(1) != _HANDSHAKE:
            return None
        record.take(2)  # record version
        # The record may be longer than this segment; read what is here.
        record.number(2)
        if record.number(1) != _CLIENT_HELLO:
            return None
        record.take(3 + 2 + 32)  # handshake length, client version, random
        record.block(1)  # session id
        record.block(2)  # cipher suites
        record.block(1)  # compression methods
        extensions = record.block(2)
        while extensions.pos < len(extensions.data):
            kind = extensions.number(2)
            body = extensions.block(2)
            if kind != _SERVER_NAME_EXT:
                continue
            names = body.block(2)
            while names.pos < len(names.data):
                name_type = names.number(1)
                name = names.block(2).data
                if name_type == _HOST_NAME:
                    return name.decode("ascii", "replace").lower()
        return None
    except IndexError:
        return None
