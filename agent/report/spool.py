"""A durable on-disk spool of sealed envelopes, delivered in order, deleted only once the hub's
signed receipt covers them (docs/protocol.md, "Delivery receipts"): a broker's PUBACK only says
the broker has the message, and a broker may still drop it (a full queue, a lost session).

Layout: one file per envelope, named by its zero-padded sequence number
(`00000000000000000042.env`), written under a temporary name, fsynced, renamed into place and the
directory fsynced. Why files and not an append-only segment log: reports come at a few a minute
(one summary per client per interval, plus rate-limited events), so a file and an fsync each cost
nothing that matters, while deleting what a receipt covers becomes a plain unlink per entry: no
compaction, no read offsets to persist. A crash leaves at worst a temporary file (discarded at the next start, with a
log line) or a whole file that is sent again (a QoS 1 duplicate the hub acknowledges and drops).

Each file is framed: b"HWS1" || u32 length || u32 CRC-32 || envelope. A file whose frame does not
check out (torn by a crash on a filesystem that reorders writes, or damaged) is discarded with a
log line and counted as corrupt.

Only sealed envelopes go in: `put()` parses the header and refuses anything unsealed, so children's
data never rests here in plaintext.

Urgent envelopes (blocked statutory and severity 4-5 categories, bypass, tamper, concern: the
caller decides) are named `<seq>.u.env`; the publisher sends them ahead of routine ones, so a
backlog of a day's summaries never delays a concern (docs/protocol.md section 12.5).

Bounded by `max_bytes`. When full, the OLDEST ROUTINE envelopes are evicted to make room, never
an urgent one: an hour-old count of lookups matters less than the report that just came in. The
eviction is counted and handed to the caller (`take_evictions()`), who reports it to the hub as
a `spool_dropped` event, so a drop is never silent. Only when urgent envelopes alone fill the
spool is a new one refused (logged, counted). A full or failing disk is handled the same way: a
counted drop with a log line; the caller lives on.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from agent.report.errors import SpoolError
from common.wire.envelope import split
from common.wire.errors import OpenError
from common.wire.header import Header, SuiteId
from common.wire.keyfile import write_atomic

log = logging.getLogger(__name__)

MAGIC = b"HWS1"
_FRAME = struct.Struct(">4sII")  # magic, envelope length, CRC-32 of the envelope
_NAME = re.compile(r"^(\d{20})(\.u)?\.env$")
_TMP_SUFFIX = ".tmp"
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled envelope and its parsed header."""

    header: Header
    envelope: bytes

    @property
    def seq(self) -> int:
        """The envelope's sequence number (also its place in the spool)."""
        return self.header.seq


@dataclass(frozen=True, slots=True)
class Eviction:
    """Routine envelopes evicted to make room: how many, and the span of their report times."""

    count: int
    oldest_ms: int
    newest_ms: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Counters and size of a spool at one moment."""

    entries: int
    bytes: int
    spooled: int
    dropped: int  # refused: spool full of urgent envelopes, or the disk failed
    corrupt: int  # discarded at start or on reading: torn or damaged
    evicted: int = 0  # oldest routine envelopes removed to make room (reported to the hub)
    urgent: int = 0  # urgent envelopes held


def _file_name(seq: int, urgent: bool = False) -> str:
    return f"{seq:020d}.u.env" if urgent else f"{seq:020d}.env"


class Spool:
    """Sealed envelopes on disk, oldest first; thread-safe."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise SpoolError(f"spool max_bytes must be positive, got {max_bytes}")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        self._order: list[int] = []  # sorted sequence numbers
        self._urgent: list[int] = []  # sorted sequence numbers of the urgent ones
        self._times: dict[int, int] = {}  # seq -> report time (ms), for eviction reports
        self._evicted = 0
        self._pending_eviction: list[int] = []  # report times of evictions not yet taken
        self._bytes = 0
        self._spooled = 0
        self._dropped = 0
        self._corrupt = 0
        self._full_logged = False
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"{self._dir}: cannot create spool directory: {exc}") from exc
        if not self._dir.is_dir():
            raise SpoolError(f"{self._dir}: spool path is not a directory")
        self._scan()

    def _scan(self) -> None:
        try:
            names = sorted(os.listdir(self._dir))
        except OSError as exc:
            raise SpoolError(f"{self._dir}: cannot list spool directory: {exc}") from exc
        for name in names:
            path = self._dir / name
            if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                log.warning("spool: discarding half-written file %s left by a crash", path)
                self._unlink(path)
                self._corrupt += 1
                continue
            match = _NAME.fullmatch(name)
            if match is None:
                log.warning("spool: ignoring unexpected file %s", path)
                continue
            size = self._check_frame(path)
            if size is None:
                self._unlink(path)
                self._corrupt += 1
                continue
            seq = int(match.group(1))
            self._sizes[seq] = size
            self._order.append(seq)
            if match.group(2):
                self._urgent.append(seq)
            self._bytes += size
        if self._order:
            log.info(
                "spool %s: %d envelopes (%d bytes) waiting from before",
                self._dir,
                len(self._order),
                self._bytes,
            )

    def _check_frame(self, path: Path) -> int | None:
        """The file's size if its frame header matches its length, else None (logged)."""
        try:
            with open(path, "rb") as handle:
                prefix = handle.read(_FRAME.size)
                size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            log.warning("spool: discarding unreadable file %s: %s", path, exc)
            return None
        if len(prefix) < _FRAME.size:  # (the report time is read later, only if evicted)
            log.warning("spool: discarding truncated file %s (%d bytes)", path, size)
            return None
        magic, length, _crc = _FRAME.unpack(prefix)
        if magic != MAGIC or size != _FRAME.size + length:
            log.warning("spool: discarding torn or damaged file %s", path)
            return None
        return size

    def put(self, envelope: bytes, *, urgent: bool = False) -> bool:
        """Store a sealed envelope durably; False (counted, logged) if it cannot be: the spool
        holds only urgent envelopes and no room is left, or the disk fails. To make room the
        oldest routine envelopes are evicted (take_evictions()).

        Raises SpoolError if `envelope` is not a sealed envelope: that is a programming error.
        """
        try:
            header = split(envelope)[0]
        except OpenError as exc:
            raise SpoolError(f"refusing to spool something that is not an envelope: {exc}") from exc
        if header.suite is SuiteId.NONE:
            raise SpoolError("refusing to spool an unsealed envelope")
        frame = _FRAME.pack(MAGIC, len(envelope), zlib.crc32(envelope)) + envelope
        if len(frame) > self._max_bytes:
            with self._lock:
                self._refuse(header.seq, f"larger than the whole spool ({self._max_bytes} bytes)")
            return False
        with self._lock:
            victims = self._make_room(len(frame))
            if victims is None:
                self._refuse(header.seq, f"full of urgent reports ({self._bytes} bytes)")
                return False
        for seq in victims:
            self._unlink(self._dir / _file_name(seq))
        with self._lock:
            try:
                self._write(_file_name(header.seq, urgent), frame)
            except OSError as exc:
                self._refuse(header.seq, f"cannot write: {exc}")
                return False
            self._full_logged = False
            self._sizes[header.seq] = len(frame)
            self._times[header.seq] = header.time_ms
            _insert(self._order, header.seq)
            if urgent:
                _insert(self._urgent, header.seq)
            self._bytes += len(frame)
            self._spooled += 1
            return True

    def _make_room(self, needed: int) -> list[int] | None:
        """Forget the oldest routine entries until `needed` more bytes fit; the evicted seqs
        (to unlink), or None if even evicting every routine entry would not make room."""
        if self._bytes + needed <= self._max_bytes:
            return []
        urgent = set(self._urgent)
        free = self._max_bytes - self._bytes
        victims: list[int] = []
        for seq in self._order:
            if free >= needed:
                break
            if seq in urgent:
                continue
            victims.append(seq)
            free += self._sizes[seq]
        if free < needed:
            return None
        for seq in victims:
            self._pending_eviction.append(self._times.get(seq) or self._time_of(seq))
            self._forget(seq)
        self._evicted += len(victims)
        log.warning(
            "spool %s: full; evicted the %d oldest routine reports (%d evicted so far)",
            self._dir,
            len(victims),
            self._evicted,
        )
        return victims

    def _time_of(self, seq: int, urgent: bool = False) -> int:
        """The report time of an entry found at start (its header is read only when needed)."""
        try:
            data = (self._dir / _file_name(seq, urgent)).read_bytes()
            return split(data[_FRAME.size :])[0].time_ms
        except (OSError, OpenError):
            return 0

    def evict_older_than(self, cutoff_ms: int) -> int:
        """Evict routine entries reported before `cutoff_ms` (the spool's age bound: a summary
        weeks old is no longer worth the room); how many. Reported like any eviction."""
        with self._lock:
            urgent = set(self._urgent)
            candidates = [seq for seq in self._order if seq not in urgent]
        victims = []
        for seq in candidates:  # seq order is report-time order, near enough: stop at a new one
            known = self._times.get(seq)
            when = known if known is not None else self._time_of(seq)
            if when >= cutoff_ms:
                break
            victims.append((seq, when))
        if not victims:
            return 0
        with self._lock:
            for seq, when in victims:
                if seq in self._sizes:
                    self._pending_eviction.append(when)
                    self._forget(seq)
            self._evicted += len(victims)
        for seq, _ in victims:
            self._unlink(self._dir / _file_name(seq))
        log.warning(
            "spool %s: evicted %d routine reports older than the age bound", self._dir, len(victims)
        )
        return len(victims)

    def take_evictions(self) -> Eviction | None:
        """What was evicted since the last call (to report to the hub), or None."""
        with self._lock:
            times, self._pending_eviction = self._pending_eviction, []
        known = [t for t in times if t > 0] or [0]
        return Eviction(len(times), min(known), max(known)) if times else None

    def is_urgent(self, seq: int) -> bool:
        """True if the entry numbered `seq` is held and urgent."""
        with self._lock:
            index = bisect.bisect_left(self._urgent, seq)
            return index < len(self._urgent) and self._urgent[index] == seq

    def urgent_after(self, seq: int) -> int | None:
        """The lowest urgent seq above `seq`, or None."""
        with self._lock:
            index = bisect.bisect_right(self._urgent, seq)
            return self._urgent[index] if index < len(self._urgent) else None

    def _refuse(self, seq: int, reason: str) -> None:
        self._dropped += 1
        # Log the first refusal of a run, then every 100th, so a full disk cannot flood the log.
        if not self._full_logged or self._dropped % 100 == 0:
            log.warning(
                "spool %s: dropping report seq %d: %s (%d dropped so far)",
                self._dir,
                seq,
                reason,
                self._dropped,
            )
            self._full_logged = True

    def _write(self, name: str, frame: bytes) -> None:
        # Temporary file, fsync, rename, fsync the directory: a crash leaves either the whole
        # entry or a ".*.tmp" file that _scan() discards.
        write_atomic(self._dir / name, frame, FILE_MODE)

    def next_after(self, seq: int) -> SpoolEntry | None:
        """The oldest readable entry with a sequence number above `seq`, or None.

        Entries that fail their checksum are discarded (logged, counted) and skipped.
        """
        while True:
            with self._lock:
                index = bisect.bisect_right(self._order, seq)
                if index >= len(self._order):
                    return None
                candidate = self._order[index]
            entry = self._read(candidate)
            if entry is not None:
                return entry
            seq = candidate

    def _read(self, seq: int) -> SpoolEntry | None:
        path = self._path(seq)
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("spool: discarding unreadable entry %s: %s", path, exc)
            self._discard(seq)
            return None
        if len(data) >= _FRAME.size:
            magic, length, crc = _FRAME.unpack_from(data)
            envelope = data[_FRAME.size :]
            if magic == MAGIC and length == len(envelope) and zlib.crc32(envelope) == crc:
                try:
                    return SpoolEntry(split(envelope)[0], envelope)
                except OpenError:
                    pass
        log.warning("spool: discarding damaged entry %s (bad frame or checksum)", path)
        self._discard(seq)
        return None

    def _path(self, seq: int) -> Path:
        return self._dir / _file_name(seq, self.is_urgent(seq))

    def _discard(self, seq: int) -> None:
        self._unlink(self._path(seq))
        with self._lock:
            self._forget(seq)
            self._corrupt += 1

    def delete(self, seq: int) -> None:
        """Remove one entry. Unknown numbers are ignored."""
        path = self._path(seq)
        with self._lock:
            if seq not in self._sizes:
                return
            self._forget(seq)
        self._unlink(path)

    def delete_through(self, seq: int) -> int:
        """Remove every entry numbered `seq` or lower (a receipt covers them); how many."""
        with self._lock:
            end = bisect.bisect_right(self._order, seq)
            covered = self._order[:end]
            del self._order[:end]
            urgent_end = bisect.bisect_right(self._urgent, seq)
            urgent = set(self._urgent[:urgent_end])
            del self._urgent[:urgent_end]
            for number in covered:
                self._bytes -= self._sizes.pop(number)
                self._times.pop(number, None)
        for number in covered:
            self._unlink(self._dir / _file_name(number, number in urgent))
        return len(covered)

    def lowest(self) -> int | None:
        """The lowest sequence number held, or None if the spool is empty."""
        with self._lock:
            return self._order[0] if self._order else None

    def highest(self) -> int | None:
        """The highest sequence number held, or None if the spool is empty."""
        with self._lock:
            return self._order[-1] if self._order else None

    def _forget(self, seq: int) -> None:
        size = self._sizes.pop(seq, None)
        if size is None:
            return
        self._bytes -= size
        self._times.pop(seq, None)
        for order in (self._order, self._urgent):
            index = bisect.bisect_left(order, seq)
            if index < len(order) and order[index] == seq:
                del order[index]

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("spool: cannot remove %s: %s", path, exc)

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)

    def stats(self) -> SpoolStats:
        """A snapshot of the spool's size and counters."""
        with self._lock:
            return SpoolStats(
                entries=len(self._order),
                bytes=self._bytes,
                spooled=self._spooled,
                dropped=self._dropped,
                corrupt=self._corrupt,
                evicted=self._evicted,
                urgent=len(self._urgent),
            )

    def oldest_time_ms(self) -> int | None:
        """The report time of the oldest entry held (None if empty): the oldest unreceipted."""
        with self._lock:
            if not self._order:
                return None
            seq = self._order[0]
            known = self._times.get(seq)
        return known if known is not None else self._time_of(seq, self.is_urgent(seq))


def _insert(order: list[int], seq: int) -> None:
    if order and seq < order[-1]:
        bisect.insort(order, seq)
    else:
        order.append(seq)
