"""The sd_notify protocol without libsystemd: one datagram per message to $NOTIFY_SOCKET.

systemd reads `READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1` (newline-separated
fields) from a unit of `Type=notify`. With `WatchdogSec=` it sets `WATCHDOG_USEC` and expects
a `WATCHDOG=1` at least that often; we ping at half of it, from the loop that does the work,
so that a wedged loop stops pinging and is restarted. Without NOTIFY_SOCKET (not under
systemd, or a test) everything here is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; a no-op when $NOTIFY_SOCKET is unset or unusable."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_period = _watchdog_period(env)

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send the fields (e.g. "READY=1", "STATUS=serving") as one datagram; False if not
        sent. Never raises: a daemon must not fail because its supervisor went away."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8", errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (with a STATUS line if given): the daemon answers now."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line STATUS, shown by `systemctl status`."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """One WATCHDOG=1 ping."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: a clean shutdown has begun."""
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))


def _address(value: str) -> str | bytes | None:
    """The socket address: a path, or '@name' for the abstract namespace (a leading NUL)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: not notifying", value)
    return None


def _watchdog_period(env: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None if no watchdog is asked for
    this process (WATCHDOG_PID names another one, as after a fork)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None


async def ping_forever(notifier: Notifier) -> None:
    """Ping the watchdog at its period from the running event loop, until cancelled. Run it as
    a task on the loop that serves: if that loop stalls, the pings stop and systemd restarts
    the daemon. Returns at once when no watchdog is asked for."""
    period = notifier.watchdog_period
    if period is None or not notifier.enabled:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(period)


async def ready_then_ping(notifier: Notifier, status: str) -> None:
    """READY=1 with a status, then ping_forever: one task for a daemon whose start() has just
    brought everything up."""
    notifier.ready(status)
    await ping_forever(notifier)


class Pinger:
    """Pings from a synchronous main loop: call due() on each pass; it pings when a period
    has passed (monotonic clock)."""

    def __init__(self, notifier: Notifier, clock: float) -> None:
        self.notifier = notifier
        self._next = clock

    def due(self, now: float) -> None:
        """Ping if the period has passed by `now` (time.monotonic())."""
        period = self.notifier.watchdog_period
        if period is None or now < self._next:
            return
        self.notifier.watchdog()
        self._next = now + period
