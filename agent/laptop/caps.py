"""Keep CAP_NET_RAW out of the agent's own hands: only its packet-sniffer child uses it.

The agent runs as root (it rewrites the system resolver), and the sniffer child, which it
starts and restarts, needs CAP_NET_RAW to capture. Under `NoNewPrivileges=yes` a child can
never hold a capability its parent's permitted set lacks, so the parent keeps CAP_NET_RAW
*permitted* but drops it from its *effective* and *inheritable* sets before any thread starts
(capabilities are per thread; threads started later copy the one that made them). The agent's
own code then cannot open a raw or packet socket (EPERM) unless it first raises the
capability again on purpose; each sniffer child, exec'd as root, gets it back in full.

What this does not do: code running inside the agent can raise it again (it is still
permitted). Taking it out of the permitted set would take it from the child too. Linux only;
elsewhere, and when the process does not hold it, nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

CAP_NET_RAW = 13
_VERSION_3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "capget") or not hasattr(libc, "capset"):
        return None
    return libc


def drop_net_raw_effective() -> bool:
    """Drop CAP_NET_RAW from this thread's effective and inheritable sets (keep it permitted,
    for the sniffer child). True if it was effective and is now dropped; call it before any
    thread starts."""
    libc = _libc()
    if libc is None:
        return False
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        log.warning("capget failed (errno %d): CAP_NET_RAW left as it is", ctypes.get_errno())
        return False
    bit = 1 << CAP_NET_RAW  # in the first word
    if not data[0].effective & bit:
        return False
    data[0].effective &= ~bit
    data[0].inheritable &= ~bit
    if libc.capset(ctypes.byref(header), data) != 0:
        log.warning("capset failed (errno %d): CAP_NET_RAW left as it is", ctypes.get_errno())
        return False
    log.info("CAP_NET_RAW dropped from the agent's effective set (kept for the sniffer child)")
    return True
