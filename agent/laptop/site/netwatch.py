"""Notice network changes (links, addresses, the default route) so the site is checked again
at once: a laptop carried from school to home must not stay `on_site` until the next minute.

The kernel announces every change on an rtnetlink socket (links, IPv4 and IPv6 addresses and
routes), opened with the standard library's AF_NETLINK support and watched with the event
loop's add_reader, which the plain asyncio loop and uvloop both provide. The messages are only
the wake-up: what changed is read from the network's picture (fingerprint.snapshot, /proc and
/sys), so no netlink message is decoded here, and what the kernel merely repeats does not count.
A burst of events (a Wi-Fi join brings a link, addresses and routes within milliseconds)
makes one comparison and at most one call, `debounce_s` after the first; events the kernel
dropped while we were busy (ENOBUFS) count as a change. Where netlink cannot be opened (not
Linux, a sandbox without it) the watcher polls the picture every `poll_s` instead and says why
in `health`.

Why not pyroute2: importing it costs the agent 10 to 13 MB resident (its package imports its
whole API), a quarter of the agent's 40 MB budget, for messages this module does not need to
read (docs/benchmarks.md, hedgerow-agent footprint).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from agent.laptop.site import fingerprint

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h): RTMGRP_LINK, RTMGRP_IPV4_IFADDR,
# RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE.
GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
_NETLINK_ROUTE = 0
_RECV_BYTES = 65536
_RCVBUF_BYTES = 256 * 1024  # events between two reads; more is ENOBUFS, which is a change


def open_netlink() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to GROUPS (OSError where there is none)."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        raise OSError(errno.EAFNOSUPPORT, "this system has no netlink sockets")
    sock = socket.socket(family, socket.SOCK_RAW, _NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
        sock.bind((0, GROUPS))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class NetWatcher:
    """Calls `on_change()` on the event loop when links, addresses or the default route
    change; `health` says why netlink is not used (None while it is)."""

    def __init__(
        self,
        on_change: Callable[[], None],
        *,
        debounce_s: float = 0.5,
        poll_s: float = 30.0,
        poll_only: bool = False,
        opener: Callable[[], socket.socket] = open_netlink,
    ) -> None:
        self.on_change = on_change
        self.debounce_s = debounce_s
        self.poll_s = poll_s
        self.poll_only = poll_only
        self.opener = opener
        self.health: str | None = None
        self.mode = "stopped"  # "netlink" or "poll" once started
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: fingerprint.NetSnapshot | None = None
        self._lost = False  # events were dropped: the next comparison is a change whatever
        self._poller: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False

    async def start(self) -> None:
        """Open netlink (or start polling); returns once changes are being watched."""
        self._stopping = False
        self.health = None
        self._loop = asyncio.get_running_loop()
        if self.poll_only:
            self._fall_back("polling was asked for")
            return
        try:
            sock = self.opener()
        except OSError as exc:
            self._fall_back(f"netlink cannot be opened: {exc}")
            return
        try:
            self._loop.add_reader(sock.fileno(), self._readable)
        except (OSError, NotImplementedError, ValueError) as exc:
            sock.close()
            self._fall_back(f"netlink cannot be watched: {exc}")
            return
        self._sock = sock
        # After the subscription, so that a change from here on is either in this picture or
        # an event still to come.
        self._last = fingerprint.snapshot()
        self.mode = "netlink"

    async def stop(self) -> None:
        """Stop watching and release the netlink socket and tasks."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_socket()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        self.mode = "stopped"

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()

    # --- netlink ------------------------------------------------------------------------

    def _readable(self) -> None:
        """Drain what the kernel sent; any of it means "look again"."""
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                if not sock.recv(_RECV_BYTES):
                    break
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    # The kernel dropped events while we were busy; the socket still works.
                    log.info("netlink events lost (receive buffer full)")
                    self._lost = True
                    continue
                self._netlink_failed(exc)
                return
        self._changed()

    def _netlink_failed(self, exc: OSError) -> None:
        if self._stopping:
            return
        log.warning("netlink events failed: %s; polling instead", exc)
        self._close_socket()
        self._fall_back(f"netlink failed: {exc}")
        self._lost = True  # something may have changed while nobody was reading
        self._changed()

    # --- polling --------------------------------------------------------------------------

    def _fall_back(self, why: str) -> None:
        self.health = f"{why}; polling every {self.poll_s:g} s"
        self.mode = "poll"
        log.info("network watcher: %s", self.health)
        if self._last is None:
            self._last = fingerprint.snapshot()
        self._poller = asyncio.create_task(self._poll(), name="netwatch-poll")

    async def _poll(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll_s)
            if self._stopping:
                return
            self._compare()

    # --- what both feed -------------------------------------------------------------------

    def _changed(self) -> None:
        # One comparison per burst, debounce_s after its first event: bounded delay, unlike a
        # timer restarted by every event, which a chatty link could put off for ever.
        if self._timer is None and not self._stopping and self._loop is not None:
            self._timer = self._loop.call_later(self.debounce_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._stopping:
            self._compare()

    def _compare(self) -> None:
        now = fingerprint.snapshot()
        if now == self._last and not self._lost:
            return
        log.debug("network change: %s", now)
        self._last, self._lost = now, False
        try:
            self.on_change()
        except Exception:
            log.exception("network change handler failed")
