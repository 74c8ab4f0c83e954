"""DNS names as the blocklists and the hot path see them: lower-case, no trailing dot, punycode."""

from __future__ import annotations

import re
from collections.abc import Iterator

# Labels are LDH plus underscore (real lists carry names like `_dmarc.x` and `ad_srv.x`);
# the last label must hold a non-digit so that IPv4 addresses are never taken for names.
_LABEL = r"[a-z0-9_-]{1,63}"
_TLD = r"(?=[a-z0-9_-]*[a-z_-])[a-z0-9_-]{1,63}"
NAME_PATTERN = rf"(?:{_LABEL}\.)*{_TLD}"
_NAME = re.compile(NAME_PATTERN)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
MAX_NAME = 253


def normalise(name: str) -> str | None:
    """Lower-case, strip one trailing dot and encode IDN labels as punycode; None if invalid."""
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    name = name.lower()
    if len(name) > MAX_NAME or _NAME.fullmatch(name) is None:
        return None
    return name


def is_ipv4(text: str) -> bool:
    """True if the text is a dotted-quad IPv4 address (lists often carry them; DNS never asks)."""
    return _IPV4.fullmatch(text) is not None


def suffixes(qname: str) -> Iterator[str]:
    """The name and each parent: a.b.example.com, b.example.com, example.com, com."""
    pos = 0
    while True:
        yield qname[pos:] if pos else qname
        pos = qname.find(".", pos) + 1
        if pos == 0:
            return
