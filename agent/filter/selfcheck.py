"""The self-check name: `A <label>.self.hedgerow.internal`, answered only by a filter that holds
the laptop agent's self-check key, with an address derived from the key and the label.

The laptop agent asks it through the OS resolver (its tamper watch): an answer with the right
address can only have come from its own filter, since nobody else knows the key and every
label is fresh. Both sides import this module: the engine answers, the agent checks.
"""

from __future__ import annotations

import hashlib
import hmac
import re

ZONE = "self.hedgerow.internal"
LABEL = re.compile(r"[a-z0-9]{16,63}")


def label_of(qname: str) -> str | None:
    """The label if `qname` (normalised: lower case, no trailing dot) is a self-check name."""
    if not qname.endswith("." + ZONE):
        return None
    label = qname[: -len(ZONE) - 1]
    return label if LABEL.fullmatch(label) else None


def self_check_address(key: bytes, label: str) -> str:
    """127.X.Y.Z, X.Y.Z the first three bytes of HMAC-SHA256(key, label)."""
    digest = hmac.new(key, label.encode("ascii"), hashlib.sha256).digest()
    return "127.{}.{}.{}".format(*digest[:3])
