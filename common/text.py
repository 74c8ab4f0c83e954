"""Text that reaches a person: what may travel in a payload, and how anything shown, printed or
mailed is made harmless.

A DNS name asked by a pupil is attacker-chosen bytes: ESC, NUL, BEL or a right-to-left override
in it once cleared a terminal running `hedgerow-hub alerts` and went into emails as it was. So:

- edge devices write names in DNS presentation format (RFC 1035 section 5.1: a byte outside
  printable ASCII, and the backslash itself, as `\\DDD`), so a name on the wire is printable;
- the payload schema refuses control and bidirectional-override characters in every string;
- what the hub prints, mails or renders goes through `printable()` anyway.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the characters that reorder or hide text (bidi overrides and
# isolates, marks, line and paragraph separators), and lone surrogates (JSON "\ud800" decodes to
# one; it cannot be stored as UTF-8).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_PRESENTATION = re.compile(r"[^\x21-\x5b\x5d-\x7e]")  # printable ASCII except the backslash


def unsafe(text: str) -> bool:
    """True if the text holds a control or bidirectional-override character."""
    return _UNSAFE.search(text) is not None


def printable(text: str) -> str:
    """The text with every control and bidi character shown as an escape (`\\x1b`,
    `\\u202e`): safe on a terminal, in an email and in a web page's text."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def dns_presentation(name: str, limit: int = 255) -> str:
    """A DNS name as RFC 1035 presentation text: each character outside printable ASCII (and
    `\\`) becomes `\\DDD` per UTF-8 byte, so the result is printable ASCII. At most `limit`
    characters, cut before an escape rather than inside one."""
    if _PRESENTATION.search(name) is None:
        return name[:limit]
    text = _PRESENTATION.sub(
        lambda m: "".join(f"\\{byte:03d}" for byte in m.group().encode("utf-8", "surrogateescape")),
        name,
    )
    if len(text) <= limit:
        return text
    cut = text[:limit]
    escape = cut.rfind("\\", max(0, limit - 3))  # an escape \DDD starting in the last 3
    return cut[:escape] if escape != -1 and escape + 4 > limit else cut
