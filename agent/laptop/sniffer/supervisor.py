"""Sniffer: runs the sniffer child (python -m agent.laptop.sniffer.child), turns its lines into
bypass findings, and restarts it with capped backoff when it dies. The parent never imports
scapy: only the child does.

`on_finding` is called from the supervisor's own reader thread, never the caller's: the service
must hand each finding off (a bounded queue) rather than do slow work in it."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace

from agent.laptop.activity.findings import BypassFinding, FindingGate, plain_address
from agent.laptop.activity.host import socket_owner
from agent.laptop.sniffer.analysis import analyse
from agent.laptop.sniffer.observed import STARTED_LINE, Observed
from agent.laptop.sniffer.preflight import why_not

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long was fine: the next restart starts fast again
STOP_GRACE_S = 5.0
OWNER_LOOKUPS_PER_S = 5.0  # psutil scans of the socket table, to name a packet's program
Owner = Callable[[str, str, int, str, int], str | None]

# The child's exit codes (child.py) and what they mean for `state`.
EXIT_REASONS = {3: "libpcap not found", 4: "no CAP_NET_RAW", 5: "no such interface"}


class Sniffer:
    """The packet sniffer child and its supervision; `state` says how it is."""

    def __init__(
        self,
        on_finding: Callable[[BypassFinding], None],
        *,
        allowed_dns: Callable[[], Collection[str]],
        interface: str | None = None,
        owner: Owner = socket_owner,
    ) -> None:
        """`on_finding` gets each new finding (once per 10 minutes per key), from the reader
        thread; `allowed_dns` gives the DNS servers that are not a bypass; `interface` limits
        the capture to one interface (default: all present when the child starts); `owner`
        names the process holding a packet's socket (psutil, at most OWNER_LOOKUPS_PER_S)."""
        self._on_finding = on_finding
        self._owner = owner
        self._lookups = _Budget(OWNER_LOOKUPS_PER_S)
        self._allowed_dns = allowed_dns
        self._interface = interface
        self._gate = FindingGate(time.time)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._state = "not started"

    @property
    def state(self) -> str:
        """ "running", or why not ("no CAP_NET_RAW", "libpcap not found", "restarting after
        exit 1", "starting", "stopped", "not started"...)."""
        return self._state

    @property
    def child_pid(self) -> int | None:
        """The running child's pid, or None."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        """Start the child and its reader thread; without the capability or libpcap, only set
        `state` to why. Never raises."""
        if self._thread is not None:
            return
        try:
            reason = why_not()
        except Exception as exc:  # a check that fails must not stop the agent
            reason = f"cannot check: {exc}"
        if reason is not None:
            self._state = reason
            log.warning("packet sniffer not started: %s", reason)
            return
        self._stop.clear()
        self._state = "starting"
        thread = threading.Thread(target=self._supervise, name="sniffer", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: a health problem, not a crash
            self._state = f"cannot start: {exc}"
            log.warning("packet sniffer not started: %s", exc)
            return
        self._thread = thread

    def stop(self) -> None:
        """Stop the child (by its pid) and the reader thread. Never raises."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _end(proc)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=STOP_GRACE_S * 2)
        if self._state in ("running", "starting") or self._state.startswith("restarting"):
            self._state = "stopped"

    def _supervise(self) -> None:
        """Run the child again and again until stopped, waiting longer after each quick death."""
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                code = self._run_child()
            except Exception:
                log.exception("packet sniffer child could not run")
                code = -1
            if self._stop.is_set():
                break
            if time.monotonic() - began >= HEALTHY_AFTER_S:
                backoff = BACKOFF_FIRST_S
            reason = EXIT_REASONS.get(code)
            self._state = f"{reason}; restarting" if reason else f"restarting after exit {code}"
            log.warning("packet sniffer child exited %s; restarting in %.1f s", code, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _run_child(self) -> int:
        """Start one child, read its lines until it ends, and return its exit code."""
        argv = [sys.executable, "-m", "agent.laptop.sniffer.child"]
        if self._interface is not None:
            argv += ["--interface", self._interface]
        # stderr is inherited: the child's log lines join ours (the journal, under systemd).
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        with self._lock:
            self._proc = proc
        if self._stop.is_set():  # stop() came while we were starting
            _end(proc)
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                self._handle(line.rstrip("\n"))
        code = proc.wait()
        with self._lock:
            self._proc = None
        return code

    def _handle(self, line: str) -> None:
        """One line from the child: the start marker or an Observed."""
        if line == STARTED_LINE:
            self._state = "running"
            return
        try:
            obs = Observed.from_line(line)
        except ValueError as exc:
            log.warning("packet sniffer child wrote a bad line (%s): %.200r", exc, line)
            return
        try:
            finding = analyse(obs, self._allowed_dns())
            if finding is None:
                return
            finding = self._named(finding, obs)
            for admitted in self._gate.admit([finding]):
                self._on_finding(admitted)
        except Exception:  # the caller's callback must not end our reading
            log.exception("handling a sniffed packet failed")

    def _named(self, finding: BypassFinding, obs: Observed) -> BypassFinding:
        """The finding with the program that sent the packet, when its socket is still open
        and a lookup is in budget (a flood of packets must not become a flood of /proc scans;
        then the finding goes without the name)."""
        if not self._lookups.take(time.monotonic()):
            return finding
        name = self._owner(obs.proto, plain_address(obs.src), obs.sport, finding.remote, obs.dport)
        return finding if name is None else replace(finding, process=name)


class _Budget:
    """At most `per_s` takes a second (a token bucket holding one second's worth)."""

    def __init__(self, per_s: float) -> None:
        self._per_s = per_s
        self._tokens = per_s
        self._at = time.monotonic()

    def take(self, now: float) -> bool:
        self._tokens = min(self._per_s, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _end(proc: subprocess.Popen[str]) -> None:
    """Terminate a child we started (by its pid), killing it if it does not go."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError as exc:
        log.warning("cannot stop packet sniffer child %s: %s", proc.pid, exc)
