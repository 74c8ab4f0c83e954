"""What each broker message is: a new report, a redelivery, a rejection, an enrolment request,
or one of our own publications echoed back. The only place the order of checks is set.

Order (docs/protocol.md): topic shape, then common.wire.open_envelope's own order (size, header,
device known and not revoked, signature, replay window, decrypt, schema), then the topic's
site/device/kind against the signed header: a device may only speak for itself.

With opening workers (hub.ingest.opening), the order is split without changing: screen() runs
the steps before the signature here (microseconds) and peeks at the replay window; a worker
verifies the signature and, unless the window already holds the seq, decrypts and checks the
schema; classify_opened() then makes the replay decision here, in arrival order, before using
what the worker decrypted.

Two outcomes come before or instead of that order. A device whose refusals burst is throttled
(hub.ingest.bursts): its envelopes are dropped before anything else, even the header. An
envelope whose signature verified but which names a hub key id not loaded (rotated while the
hub runs, and not picked up yet) is held (hub.store.held) to be opened once the key is loaded,
not refused: it is authentic, and refusing it would acknowledge and lose it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.wire.envelope import (
    DeviceRecord,
    Duplicate,
    Keyring,
    Opened,
    open_envelope,
    screen,
)
from common.wire.errors import OpenError, Reason
from common.wire.header import Header
from common.wire.topics import ROOT, UpTopic, parse_up
from hub.errors import StoreError
from hub.ingest.bursts import Bursts
from hub.ingest.directory import CachedDirectory
from hub.ingest.opening import Job, Refused, Result
from hub.model import DeviceInfo
from hub.mqtt import Incoming
from hub.store.replay_guard import StoreReplayGuard

ENROLL_SEGMENT = "enroll"
_DOWN = ("policy", "receipt")  # the hub's own publications, seen through a shared subscription
_TOPICS_CACHED = 100_000
# Incoming.generation of an envelope read back from held_envelopes (hub.ingest.holding): no
# connection delivered it (nothing to acknowledge), its signature verified once, and it is
# never throttled (it is not part of a flood now).
HELD_GENERATION = -1


@dataclass(frozen=True, slots=True)
class Accepted:
    """Opened and new: to be stored."""

    message: Incoming
    opened: Opened
    device: DeviceInfo


@dataclass(frozen=True, slots=True)
class Redelivered:
    """An exact copy of something already stored: acknowledge, store nothing."""

    message: Incoming


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused, with the reason code of common.wire.Reason."""

    message: Incoming
    reason: str
    site: str | None
    device: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    """A new device asking to join: handed to the enrolment service."""

    message: Incoming
    request_id: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Our own publications (policies, enrolment replies) that a wildcard also matches."""

    message: Incoming


@dataclass(frozen=True, slots=True)
class Throttled:
    """From a device whose refusals burst: dropped unopened (acknowledged, counted)."""

    message: Incoming
    site: str
    device: str


@dataclass(frozen=True, slots=True)
class Held:
    """Authentic (the signature verified) but sealed to a hub key not loaded: kept whole, to
    be opened once the key is."""

    message: Incoming
    header: Header
    digest: bytes


Outcome = Accepted | Redelivered | Rejected | EnrollRequest | Ignored | Throttled | Held


@dataclass(frozen=True, slots=True)
class ToOpen:
    """A device report past the steps before the signature: an opening worker's job."""

    job: Job
    header: Header  # decoded from the job's bytes here; the worker's reply comes without it

    @property
    def seq_key(self) -> tuple[str, str, int]:
        """(site, device, seq): which envelopes compete for the same place."""
        return (self.header.site, self.header.device, self.header.seq)


# What is known of a message before its batch is classified: an outcome the steps before the
# signature decided, a worker's result, or nothing yet (classify() it in this thread).
Opening = Outcome | Result | None


class Opener:
    """Classifies messages with the DB-backed directory and replay guard of one thread."""

    def __init__(
        self,
        directory: CachedDirectory,
        keyring: Keyring,
        replay: StoreReplayGuard,
        bursts: Bursts | None = None,
    ) -> None:
        self.directory = directory
        self.keyring = keyring
        self.replay = replay
        self.bursts = bursts  # None: nothing is throttled
        self._failure: StoreError | None = None
        self._verified: tuple[Header, bytes] | None = None  # what reached the replay check
        self._topics: dict[str, UpTopic | None] = {}

    # open_envelope turns any error inside it into OpenError(malformed); a database failure
    # during a lookup must not become a rejection (the message would be acked and lost), so
    # lookups go through these two methods, which note the failure for classify() to re-raise.

    def device_record(self, site: str, device: str) -> DeviceRecord | None:
        """DeviceDirectory for open_envelope."""
        try:
            return self.directory.device_record(site, device)
        except StoreError as exc:
            self._failure = exc
            raise

    def check(self, header: Header, digest: bytes) -> bool:
        """ReplayGuard for open_envelope (which asks only once the signature verified)."""
        self._verified = (header, digest)
        try:
            return self.replay.check(header, digest)
        except StoreError as exc:
            self._failure = exc
            raise

    def load_devices(self, batch: Sequence[Incoming]) -> None:
        """Load every device the batch's topics name, and their replay state, in one query
        each (raises StoreError)."""
        topics = (self.report_topic(m) for m in batch)
        devices = {(t.site, t.device) for t in topics if t is not None}
        self.directory.load(devices)
        for site, device in self.replay.poll_resets():
            if self.bursts is not None:
                self.bursts.lift(site, device)
        self.replay.load(devices)

    def report_topic(self, message: Incoming) -> UpTopic | None:
        """The topic of a device report (what open_envelope is for); None for anything else.
        Remembered by topic: a batch asks several times, and each device uses one or two."""
        try:
            return self._topics[message.topic]
        except KeyError:
            pass
        parts = message.topic.split("/")
        ours = len(parts) == 5 and "/".join(parts[:2]) == ROOT
        found = None
        if not (ours and (parts[2] == ENROLL_SEGMENT or parts[4] in _DOWN)):
            found = parse_up(message.topic)
        if len(self._topics) >= _TOPICS_CACHED:
            self._topics.clear()
        self._topics[message.topic] = found
        return found

    def classify(self, message: Incoming) -> Outcome:
        """Decide what a message is. Raises only StoreError (the database failed)."""
        topic = self.report_topic(message)
        if topic is None:
            parts = message.topic.split("/")
            if len(parts) == 5 and "/".join(parts[:2]) == ROOT:
                if parts[2] == ENROLL_SEGMENT and parts[4] == "request":
                    return EnrollRequest(message, parts[3])
                if (parts[2] == ENROLL_SEGMENT and parts[4] == "reply") or parts[4] in _DOWN:
                    return Ignored(message)
            topic = parse_up(message.topic)  # e.g. site "enroll" with a report kind
            if topic is None:
                return Rejected(message, Reason.MALFORMED, None, None, "not a report topic")
        if self._throttled(message, topic):
            return Throttled(message, topic.site, topic.device)
        self._failure = None
        self._verified = None
        try:
            result = open_envelope(message.payload, devices=self, keyring=self.keyring, replay=self)
        except OpenError as exc:
            if self._failure is not None:
                raise self._failure from exc
            if exc.reason == Reason.WRONG_KEY and self._verified is not None:
                header, digest = self._verified
                return self._hold(message, topic, header, digest, exc.detail)
            return Rejected(message, exc.reason, topic.site, topic.device, exc.detail)
        return self._decide(message, topic, result)

    def screen(self, message: Incoming) -> Outcome | ToOpen | None:
        """The steps of open_envelope before the signature, for a message that an opening
        worker would open: its outcome if they refuse it, or the worker's job (verify only if
        the replay window already holds its seq: decrypting it would be wasted); None for
        anything classify() handles here. Raises only StoreError."""
        topic = self.report_topic(message)
        if topic is None:
            return None
        if self._throttled(message, topic):
            return Throttled(message, topic.site, topic.device)
        self._failure = None
        try:
            screened = screen(message.payload, devices=self)
        except OpenError as exc:
            if self._failure is not None:
                raise self._failure from exc
            return Rejected(message, exc.reason, topic.site, topic.device, exc.detail)
        header = screened.header
        job = (message.payload, screened.record.verify_key.public, self.replay.taken(header))
        return ToOpen(job, header)

    def classify_opened(self, message: Incoming, opened: Opening) -> Outcome:
        """classify() for a message screened here and opened by a worker process
        (hub.ingest.opening), with the same outcome: a refusal before the signature stands;
        after it, this thread's replay check comes first, then the worker's decryption and
        schema result. Raises only StoreError."""
        if opened is None:
            return self.classify(message)
        if not isinstance(opened, Opened | Duplicate | Refused):
            return opened  # decided by screen()
        topic = self.report_topic(message)
        if topic is None:  # not what screen() sends to a worker
            return self.classify(message)
        if opened.header is None or opened.digest is None:  # refused before the signature
            assert isinstance(opened, Refused)
            return Rejected(message, opened.reason, topic.site, topic.device, opened.detail)
        try:
            duplicate = self.replay.check(opened.header, opened.digest)
        except OpenError as exc:
            return Rejected(message, exc.reason, topic.site, topic.device, exc.detail)
        if duplicate:
            return self._decide(message, topic, Duplicate(opened.header, opened.digest))
        if isinstance(opened, Duplicate):  # verified only, but new after all: open it here
            return self.classify(message)
        if isinstance(opened, Refused):
            if opened.reason == Reason.WRONG_KEY:
                if self.keyring.opening_key(opened.header.key_id) is not None:
                    return self.classify(message)  # loaded here since the worker looked
                return self._hold(message, topic, opened.header, opened.digest, opened.detail)
            return Rejected(message, opened.reason, topic.site, topic.device, opened.detail)
        return self._decide(message, topic, opened)

    def _throttled(self, message: Incoming, topic: UpTopic) -> bool:
        return (
            self.bursts is not None
            and message.generation != HELD_GENERATION
            and self.bursts.throttled(topic.site, topic.device)
        )

    def _hold(
        self, message: Incoming, topic: UpTopic, header: Header, digest: bytes, detail: str
    ) -> Outcome:
        """An authentic envelope refused as wrong_key: held if no key with its key id is loaded
        (a key rotated in, not loaded yet); refused if one is (the suite differs)."""
        mismatch = _mismatch(header, topic.site, topic.device, topic.kind)
        if mismatch:
            return Rejected(message, Reason.MALFORMED, topic.site, topic.device, mismatch)
        if self.keyring.opening_key(header.key_id) is not None:
            return Rejected(message, Reason.WRONG_KEY, topic.site, topic.device, detail)
        return Held(message, header, digest)

    def _decide(self, message: Incoming, topic: UpTopic, result: Opened | Duplicate) -> Outcome:
        mismatch = _mismatch(result.header, topic.site, topic.device, topic.kind)
        if mismatch:
            return Rejected(message, Reason.MALFORMED, topic.site, topic.device, mismatch)
        if isinstance(result, Duplicate):
            return Redelivered(message)
        device = self.directory.info(result.header.site, result.header.device)
        if device is None:  # enrolled a moment ago, gone now: treat as unknown
            return Rejected(message, Reason.UNKNOWN_DEVICE, topic.site, topic.device, "vanished")
        self.replay.accept(result.header, result.digest)
        return Accepted(message, result, device)


def _mismatch(header: Header, site: str, device: str, kind: object) -> str:
    if (header.site, header.device, header.kind) != (site, device, kind):
        return (
            f"topic says {site}/{device}/{kind}, signed header says "
            f"{header.site}/{header.device}/{header.kind.name}"
        )
    return ""
