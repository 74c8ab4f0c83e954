"""Client address -> device name and MAC, as the filter knows it now: the config's static table,
the DHCP servers' lease files (re-read when they change) and the kernel's ARP table.

`poll()` is cheap: at most every `check_s` it stats each lease file and parses only one whose
inode, size or modification time changed, and re-reads the ARP table. The reporter's worker
thread calls it, never the DNS hot path. A missing or malformed lease file is a warning, logged
once per change of the file and counted, never an exception.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.dns.arp import ARP_PATH, read_arp
from agent.dns.client_window import Known
from agent.dns.clients.leases import PARSERS, Lease
from agent.dns.config.model import ClientsConfig, LeaseFile

log = logging.getLogger(__name__)

MAX_LEASE_BYTES = 64 * 1024 * 1024  # larger is not a lease file we should hold in memory


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """One lease file as last read: its leases and its problem, if any."""

    file: LeaseFile
    leases: int
    problem: str | None


class _Watched:
    """One lease file: what changed last time we looked, and what it held then."""

    def __init__(self, file: LeaseFile) -> None:
        self.file = file
        self.stamp: tuple[int, int, int] | None = None  # (inode, size, mtime_ns)
        self.seen_any = False  # looked at least once
        self.leases: dict[str, Lease] = {}
        self.problem: str | None = None

    def poll(self, now: float) -> bool:
        """Re-read the file if it changed; True if what it holds or its problem (.problem) did."""
        try:
            st = os.stat(self.file.path)
        except OSError as exc:
            return self._set({}, f"cannot read: {exc.strerror or exc}", None)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self.seen_any and stamp == self.stamp:
            return False
        if st.st_size > MAX_LEASE_BYTES:
            return self._set({}, f"larger than {MAX_LEASE_BYTES} bytes: not read", stamp)
        try:
            text = Path(self.file.path).read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            return self._set({}, f"cannot read: {exc.strerror or exc}", stamp)
        try:
            parsed = PARSERS[self.file.format](text, now)
        except Exception as exc:  # a parser bug must not stop the reports: contain it
            log.exception("[clients] lease file %s: parser failed", self.file.path)
            return self._set({}, f"could not be parsed: {exc}", stamp)
        problem = None
        if parsed.bad:
            problem = (
                f"{parsed.bad} entries not in {self.file.format} lease format "
                f"(the first at line {parsed.first_bad}); they are skipped"
            )
        return self._set(parsed.leases, problem, stamp)

    def _set(
        self, leases: dict[str, Lease], problem: str | None, stamp: tuple[int, int, int] | None
    ) -> bool:
        changed = not self.seen_any or stamp != self.stamp or problem != self.problem
        self.seen_any = True
        self.stamp = stamp
        self.leases = leases
        self.problem = problem
        return changed


class ClientNames:
    """What the filter knows of each client address now (see the module docstring)."""

    def __init__(
        self,
        config: ClientsConfig,
        *,
        arp_path: Path = ARP_PATH,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        quiet: bool = False,
    ) -> None:
        self._arp_path = arp_path
        self._quiet = quiet  # check prints the problems itself
        self._clock = clock
        self._monotonic = monotonic
        self._next_check = float("-inf")
        self.problems = 0  # lease-file problems logged (once per change of a file)
        self._macs: dict[str, str] = {}
        self._known: dict[str, Known] = {}  # from the table and the leases
        self._view: dict[str, Known] = {}  # the same with ARP MACs filled in: what lookup reads
        self._watched: list[_Watched] = []
        self.configure(config)

    def configure(self, config: ClientsConfig) -> None:
        """Use a new [clients] (a reload): files kept keep what they hold; look again at once."""
        old = {w.file: w for w in self._watched}
        self.config = config
        self._watched = [old.get(file) or _Watched(file) for file in config.leases]
        self._static = {entry.ip: entry for entry in config.names}
        self._known = self._merge()
        self._view = self._with_arp()
        self._next_check = float("-inf")

    def poll(self) -> None:
        """Every check_s at most: look at each lease file and the ARP table again."""
        now = self._monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.config.check_s
        wall = self._clock()
        changed = False
        for watched in self._watched:
            had_problem = watched.problem
            if watched.poll(wall):
                changed = True
                if watched.problem is None and had_problem is not None:
                    log.info("[clients] lease file %s: read again", watched.file.path)
                if watched.problem is not None:
                    self.problems += 1
                    log.log(
                        logging.DEBUG if self._quiet else logging.WARNING,
                        "[clients] lease file %s (%s): %s",
                        watched.file.path,
                        watched.file.format,
                        watched.problem,
                    )
        macs = read_arp(self._arp_path)
        if changed:
            self._known = self._merge()
        if changed or macs != self._macs:
            self._macs = macs
            self._view = self._with_arp()

    def _merge(self) -> dict[str, Known]:
        """Static names over lease names; the first lease file listed wins a clash."""
        known: dict[str, Known] = {}
        for watched in reversed(self._watched):
            for ip, lease in watched.leases.items():
                if lease.hostname is not None or lease.mac is not None:
                    known[ip] = Known(lease.hostname, lease.mac)
        for ip, entry in self._static.items():
            lease_mac = known[ip].mac if ip in known else None
            known[ip] = Known(entry.name, entry.mac or lease_mac)
        return known

    def _with_arp(self) -> dict[str, Known]:
        view = dict(self._known)
        for ip, mac in self._macs.items():
            known = view.get(ip)
            if known is None:
                view[ip] = Known(arp_mac=mac)
            elif known.mac is None:
                view[ip] = Known(known.hostname, None, mac)
        return view

    def lookup(self, ip: str) -> Known | None:
        """What is known of `ip` now: name and MAC from the table or a lease, else the ARP
        table's MAC (a fill-in, see client_window.Known), else None. One dict lookup."""
        return self._view.get(ip)

    def status(self) -> list[LeaseStatus]:
        """Each lease file as last read (check and explain show the problems)."""
        return [LeaseStatus(w.file, len(w.leases), w.problem) for w in self._watched]

    def counters(self) -> dict[str, float]:
        """For /metrics: lease files with a problem now, problems logged, addresses named."""
        return {
            "clients_lease_files_with_problems": sum(1 for w in self._watched if w.problem),
            "clients_lease_problems": self.problems,
            "clients_named": sum(1 for k in self._known.values() if k.hostname),
        }


def known_now(config: ClientsConfig, ip: str, arp_path: Path = ARP_PATH) -> Known | None:
    """What a query from `ip` would be recorded as now (for explain): one read of everything."""
    names = ClientNames(config, arp_path=arp_path)
    names.poll()
    return names.lookup(ip)


def lease_warnings(config: ClientsConfig) -> list[str]:
    """One line per lease file that is missing or malformed now (for check)."""
    names = ClientNames(config, quiet=True)
    names.poll()
    return [
        f"[clients] lease file {status.file.path} ({status.file.format}): {status.problem}"
        for status in names.status()
        if status.problem is not None
    ]
