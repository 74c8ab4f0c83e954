"""DNS names as the blocklists and the hot path see them: lower-case, no trailing dot, punycode.

International names are converted as browsers convert them: IDNA 2008 with the UTS #46 mapping,
non-transitional (`faß.de` is `xn--fa-hia.de`, not IDNA 2003's `fass.de`), by the `idna`
package, imported with the first non-ASCII name."""

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
        converted = to_ascii(name)
        if converted is None:
            return None
        name = converted
    name = name.lower()
    if len(name) > MAX_NAME or _NAME.fullmatch(name) is None:
        return None
    return name


def to_ascii(name: str) -> str | None:
    """A name with Unicode labels as its A-labels (IDNA 2008, UTS #46 non-transitional); None
    if a label is invalid under IDNA 2008. ASCII labels pass unchanged (lists carry `_dmarc.x`,
    which IDNA would refuse), for `normalise` to check."""
    import idna  # only lists and names with non-ASCII labels need it

    try:
        mapped = idna.uts46_remap(name, std3_rules=False)
        labels = [
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        ]
    except ValueError:  # idna.IDNAError is a UnicodeError; nothing it raises may escape
        return None
    return ".".join(labels)


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
