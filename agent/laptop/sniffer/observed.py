"""Observed: one DNS, DoT or DoQ packet as the sniffer child saw it, in our own type, and its
JSON line form (how the child hands it to the parent)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Observed:
    """A packet's protocol ("tcp"/"udp"), addresses, ports, DNS question name and TLS SNI."""

    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    qname: str | None
    tls_sni: str | None

    def to_line(self) -> str:
        """One JSON line (no newline)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> Observed:
        """Read a JSON line written by to_line; ValueError when it is not one."""
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        text = {k: raw.get(k) for k in ("proto", "src", "dst")}
        ports = {k: raw.get(k) for k in ("sport", "dport")}
        names = {k: raw.get(k) for k in ("qname", "tls_sni")}
        if set(raw) != {*text, *ports, *names}:
            raise ValueError(f"unexpected keys {sorted(raw)}")
        if text["proto"] not in ("tcp", "udp"):
            raise ValueError(f"proto {text['proto']!r} is not tcp or udp")
        for key, value in text.items():
            if not isinstance(value, str):
                raise ValueError(f"{key} is not a string")
        for key, value in ports.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
                raise ValueError(f"{key} is not a port")
        for key, value in names.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} is not a string or null")
        return cls(
            str(text["proto"]),
            str(text["src"]),
            str(text["dst"]),
            int(str(ports["sport"])),
            int(str(ports["dport"])),
            None if names["qname"] is None else str(names["qname"]),
            None if names["tls_sni"] is None else str(names["tls_sni"]),
        )


# What the child writes once it is capturing, before any Observed line.
STARTED_LINE = '{"started":true}'
