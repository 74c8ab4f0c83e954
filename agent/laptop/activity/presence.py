"""Is the machine awake, is someone logged in, are they using it.

Awake time: CLOCK_MONOTONIC stops while the machine is suspended and CLOCK_BOOTTIME does not,
so the monotonic clock's advance is the time awake (and the difference the time asleep).

Whether a user is active, in order:
1. logind (systemd): `loginctl show-session` IdleHint of the user's sessions, which the desktop
   sets from keyboard and mouse idleness; used wherever `loginctl list-sessions` works;
2. otherwise, as `w` computes idle time: the access time of the session's terminal device
   (/dev/pts/N, /dev/ttyN), which every keystroke touches. A session without a terminal
   device (an X display ":0") counts as active, as nothing says it is idle.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.laptop.activity import host

log = logging.getLogger(__name__)

IDLE_AFTER_S = 300.0  # `w` and screen savers think in minutes; five is a common default
LOGINCTL_RETRY_S = 600.0  # a host without logind does not grow one; look again rarely
_LOGINCTL_TIMEOUT_S = 2.0


class AwakeClock:
    """Seconds awake between calls, from CLOCK_MONOTONIC against CLOCK_BOOTTIME."""

    def __init__(self) -> None:
        """Start counting now."""
        self._mono = time.clock_gettime(time.CLOCK_MONOTONIC)
        self._boot = time.clock_gettime(time.CLOCK_BOOTTIME)

    def lap(self) -> tuple[float, float]:
        """(seconds awake, seconds asleep) since the last lap, then start the next one."""
        mono = time.clock_gettime(time.CLOCK_MONOTONIC)
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        awake = mono - self._mono
        asleep = max((boot - self._boot) - awake, 0.0)
        self._mono, self._boot = mono, boot
        return awake, asleep


def tty_idle_s(terminal: str, now: float, dev: Path = Path("/dev")) -> float | None:
    """Seconds since the terminal device was last used (its atime), or None without a device."""
    if not terminal or terminal.startswith(":"):
        return None
    try:
        return max(now - os.stat(dev / terminal).st_atime, 0.0)
    except OSError:
        return None


def _run(argv: Sequence[str]) -> str | None:
    """A command's stdout, or None when it cannot run or fails."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_LOGINCTL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


class LogindIdle:
    """User idleness from logind's IdleHint, when logind answers."""

    def __init__(self, run: Callable[[Sequence[str]], str | None] = _run) -> None:
        """`run` runs a command and returns its stdout or None (a seam for the unit test)."""
        self._run = run
        self._retry_at = 0.0

    def active(self, now: float) -> bool | None:
        """Whether some user session is not idle; None when logind cannot say (then ask later)."""
        if now < self._retry_at:
            return None
        listing = self._run(["loginctl", "list-sessions", "--no-legend"])
        if listing is None:
            self._retry_at = now + LOGINCTL_RETRY_S
            return None
        session_ids = [line.split()[0] for line in listing.splitlines() if line.strip()]
        any_user = False
        for session_id in session_ids:
            props = self._run(
                ["loginctl", "show-session", session_id, "-p", "Class", "-p", "IdleHint"]
            )
            if props is None:
                continue
            values = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
            if values.get("Class") != "user":
                continue  # greeters and background sessions are not someone at the keyboard
            any_user = True
            if values.get("IdleHint") == "no":
                return True
        return False if any_user else None


class Presence:
    """Who is logged in and whether they are active now."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """`clock` is wall time, which terminal access times are in."""
        self._clock = clock
        self._logind = LogindIdle()

    def users(self) -> list[host.Session]:
        """The logged-in sessions, the most recently started first."""
        return sorted(host.sessions(), key=lambda s: s.started, reverse=True)

    def state(self) -> tuple[bool, bool]:
        """(a user is logged in, that user is active now)."""
        sessions = host.sessions()
        if not sessions:
            return (False, False)
        now = self._clock()
        by_logind = self._logind.active(now)
        if by_logind is not None:
            return (True, by_logind)
        for session in sessions:
            idle = tty_idle_s(session.terminal or "", now)
            if idle is None or idle < IDLE_AFTER_S:
                return (True, True)
        return (True, False)
