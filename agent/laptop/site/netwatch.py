"""Notice network changes (links, addresses, the default route) so the site is checked again
at once: a laptop carried from school to home must not stay `on_site` until the next minute.

Netlink events through pyroute2's asyncio API; this is the only module that imports
pyroute2, and it turns its messages into netstate facts at once. On a plain asyncio loop the
socket is read on that loop; pyroute2 cannot register a netlink socket with uvloop, so under
any other loop it runs on a plain asyncio loop in a thread of its own and hands the facts over
with call_soon_threadsafe. A burst of events (a Wi-Fi join brings a link, addresses and
routes within milliseconds) makes one call, `debounce_s` after the first; events the kernel
dropped while we were busy (ENOBUFS) count as a change, and the picture starts afresh. Where
netlink cannot be opened (not Linux, a sandbox without it) the watcher polls a cheap snapshot
every `poll_s` instead and says why in `health`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.laptop.site import fingerprint
from agent.laptop.site.netstate import Address, DefaultRouteFact, Fact, Link, NetState

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4 and IPv6 addresses and routes.
_GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
_IFF_UP, _IFF_LOWER_UP = 0x1, 0x10000
_RT_TABLE_LOCAL, _RTN_UNICAST = 255, 1
_STOP_WAIT_S = 5.0
Found = tuple[bool, Fact]  # (added, fact)


def fact_of(msg: Any) -> Found | None:
    """(added, fact) for a pyroute2 rtnetlink message, or None if the site check does not care
    (a route to somewhere else, the local table)."""
    event = str(msg.get("event") or "")
    added = event.startswith("RTM_NEW")
    kind = event[7:] if event.startswith(("RTM_NEW", "RTM_DEL")) else ""
    if kind == "LINK":
        flags = int(msg["flags"])
        name = str(msg.get("ifname") or "")
        return added, Link(
            int(msg["index"]), name, bool(flags & _IFF_UP), bool(flags & _IFF_LOWER_UP)
        )
    if kind == "ADDR":
        # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point.
        address = msg.get("local") or msg.get("address")
        if address is None:
            return None
        return added, Address(
            int(msg["index"]), int(msg["family"]), str(address), int(msg["prefixlen"])
        )
    if kind == "ROUTE":
        table = int(msg.get("table") or msg["table"])
        if int(msg["dst_len"]) or table == _RT_TABLE_LOCAL or int(msg["type"]) != _RTN_UNICAST:
            return None
        gateway = msg.get("gateway")
        oif = msg.get("oif")
        route = DefaultRouteFact(
            int(msg["family"]),
            table,
            None if gateway is None else str(gateway),
            None if oif is None else int(oif),
            int(msg.get("priority") or 0),
        )
        return added, route
    return None


async def _open() -> tuple[Any, list[Found]]:
    """A pyroute2 socket bound to the groups, and what is there now (so that only what changes
    later counts as a change). Runs on whichever loop will read the socket."""
    from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]

    netlink = AsyncIPRoute()
    try:
        await netlink.bind(groups=_GROUPS)
        facts: list[Found] = []
        for dump in (netlink.get_links, netlink.get_addr, netlink.get_routes):
            async for msg in await dump():
                found = _convert(msg)
                if found is not None:
                    facts.append(found)
    except BaseException:
        netlink.close()
        raise
    return netlink, facts


def _convert(msg: Any) -> Found | None:
    try:
        return fact_of(msg)
    except (KeyError, TypeError, ValueError) as exc:
        log.debug("unreadable netlink message: %s", exc)
        return None


def _close(netlink: Any) -> None:
    try:
        netlink.close()
    except Exception as exc:  # closing must never stop the stop
        log.debug("closing netlink: %s", exc)


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
    ) -> None:
        self.on_change = on_change
        self.debounce_s = debounce_s
        self.poll_s = poll_s
        self.poll_only = poll_only
        self.health: str | None = None
        self.mode = "stopped"  # "netlink", "netlink-thread" or "poll" once started
        self.state = NetState()
        self._netlink: Any = None  # read on our loop
        self._reader: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None  # or read on a loop of its own
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_netlink: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False

    async def start(self) -> None:
        """Open netlink (or start polling); returns once changes are being watched."""
        self._stopping = False
        self.health = None
        self.state = NetState()
        if self.poll_only:
            self._fall_back("polling was asked for")
            return
        loop = asyncio.get_running_loop()
        try:
            if isinstance(loop, asyncio.SelectorEventLoop):
                self._netlink, facts = await _open()
                self._load(facts)
                self._reader = asyncio.create_task(self._read_here(), name="netwatch-netlink")
                self.mode = "netlink"
            else:
                await self._start_thread(loop)
                self.mode = "netlink-thread"
        except Exception as exc:  # ImportError, OSError, NetlinkError: any reason is a reason
            self._fall_back(f"netlink cannot be opened: {exc}")

    async def stop(self) -> None:
        """Stop watching and release the netlink socket, thread and tasks."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._netlink is not None:
            netlink, self._netlink = self._netlink, None
            _close(netlink)  # ends the reader: its read fails with ECONNRESET
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, _STOP_WAIT_S)
            except TimeoutError:
                log.warning("netlink reader did not end when its socket closed; cancelled")
        if self._thread is not None:
            await self._stop_thread(self._thread)
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        self._reader = self._poller = self._thread = None
        self.mode = "stopped"

    # --- netlink on our own loop --------------------------------------------------------

    async def _read_here(self) -> None:
        failure = await self._pump(self._netlink, self._apply)
        if failure is not None:
            if self._netlink is not None:
                netlink, self._netlink = self._netlink, None
                _close(netlink)
            self._netlink_failed(failure)

    async def _pump(
        self, netlink: Any, deliver: Callable[[Found | None], None]
    ) -> Exception | None:
        """Read events until stopped (None delivered: events were lost); the failure, if
        reading failed otherwise."""
        while not self._stopping:
            try:
                async for msg in netlink.get():
                    found = _convert(msg)
                    if found is not None:
                        deliver(found)
            except Exception as exc:
                if self._stopping:
                    return None  # closing the socket at stop ends the read with ECONNRESET
                # pyroute2 raises NetlinkError (.code) or, from some calls, OSError (.errno).
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                if code != errno.ENOBUFS:
                    return exc
                # The kernel dropped events while we were busy; the socket still works.
                log.info("netlink events lost (receive buffer full)")
                deliver(None)
        return None

    # --- netlink on a plain asyncio loop in a thread (under uvloop) ------------------------

    async def _start_thread(self, main: asyncio.AbstractEventLoop) -> None:
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._thread_main, args=(main, opened), name="netwatch-netlink", daemon=True
        )
        self._thread = thread
        thread.start()
        try:
            await asyncio.wrap_future(opened)
        except BaseException:
            await asyncio.to_thread(thread.join, _STOP_WAIT_S)
            self._thread = None
            raise

    def _thread_main(
        self, main: asyncio.AbstractEventLoop, opened: concurrent.futures.Future[None]
    ) -> None:
        own = asyncio.SelectorEventLoop()  # explicitly not the policy's loop, which may be uvloop
        try:
            own.run_until_complete(self._thread_run(main, own, opened))
        finally:
            own.close()

    async def _thread_run(
        self,
        main: asyncio.AbstractEventLoop,
        own: asyncio.AbstractEventLoop,
        opened: concurrent.futures.Future[None],
    ) -> None:
        try:
            netlink, facts = await _open()
        except Exception as exc:
            opened.set_exception(exc)
            return
        self._thread_loop, self._thread_netlink = own, netlink
        # One queue of callbacks onto the main loop keeps the order: what is there, then events.
        main.call_soon_threadsafe(self._load, facts)
        opened.set_result(None)

        def deliver(found: Found | None) -> None:
            main.call_soon_threadsafe(self._apply, found)

        try:
            failure = await self._pump(netlink, deliver)
        except RuntimeError:  # the main loop closed under us: nobody to tell
            failure = None
        finally:
            self._thread_loop = self._thread_netlink = None
            _close(netlink)
        if failure is not None and not main.is_closed():
            main.call_soon_threadsafe(self._netlink_failed, failure)

    async def _stop_thread(self, thread: threading.Thread) -> None:
        own = self._thread_loop
        if own is not None:
            # Closed on the thread's own loop, the socket wakes its read with ECONNRESET. A
            # RuntimeError means that loop is closed already: the thread is ending anyway.
            with contextlib.suppress(RuntimeError):
                own.call_soon_threadsafe(self._close_thread_netlink)
        await asyncio.to_thread(thread.join, _STOP_WAIT_S)
        if thread.is_alive():
            log.warning("netlink thread did not end within %s s", _STOP_WAIT_S)

    def _close_thread_netlink(self) -> None:
        if self._thread_netlink is not None:
            _close(self._thread_netlink)

    # --- what both feed -------------------------------------------------------------------

    def _load(self, facts: list[Found]) -> None:
        for _, fact in facts:
            self.state.add(fact)

    def _apply(self, found: Found | None) -> None:
        if found is None:
            # What was lost is unknown: start afresh, so nothing later passes for a repeat.
            self.state = NetState()
            self._changed()
            return
        added, fact = found
        if self.state.add(fact) if added else self.state.remove(fact):
            log.debug("network change: %s %s", "new" if added else "gone", fact)
            self._changed()

    def _netlink_failed(self, exc: Exception) -> None:
        if self._stopping:
            return
        log.warning("netlink events failed: %s; polling instead", exc)
        self._fall_back(f"netlink failed: {exc}")
        self._changed()  # something may have changed while nobody was reading

    def _fall_back(self, why: str) -> None:
        self.health = f"{why}; polling every {self.poll_s:g} s"
        self.mode = "poll"
        log.info("network watcher: %s", self.health)
        self._poller = asyncio.create_task(self._poll(), name="netwatch-poll")

    async def _poll(self) -> None:
        last = fingerprint.snapshot()
        while not self._stopping:
            await asyncio.sleep(self.poll_s)
            if self._stopping:
                return
            now = fingerprint.snapshot()
            if now != last:
                last = now
                self._changed()

    def _changed(self) -> None:
        # One call per burst, debounce_s after its first event: bounded delay, unlike a timer
        # restarted by every event, which a chatty link could put off for ever.
        if self._timer is None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.debounce_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.on_change()
        except Exception:
            log.exception("network change handler failed")
