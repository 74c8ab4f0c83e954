"""CPU accounting from /proc (psutil), and the crypto floor: what Ed25519 verify and HPKE open
of the benchmark's own envelopes cost on one core, timed here."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from common.wire import payload
from common.wire.envelope import split
from hub.keys import HubKeys
from tests.hub_ingest_fixtures import SimDevice
from tests.services import Postgres


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, live or reaped."""
    proc = psutil.Process(pid)
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def own_cpu(pid: int) -> float:
    """CPU seconds of one process (all its threads), without its children."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def children_cpu(pid: int) -> float:
    """CPU seconds of a process's descendants, live or reaped."""
    return process_cpu(pid) - own_cpu(pid)


def self_cpu() -> float:
    """CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu(pg: Postgres | None) -> float:
    """CPU seconds of the whole PostgreSQL cluster (postmaster and its backends); 0 without."""
    if pg is None:
        return 0.0
    pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    return process_cpu(pid)


@dataclass(frozen=True, slots=True)
class Floor:
    """CPU seconds per envelope of the bare crypto (and schema) on the bench's own bytes."""

    verify: float
    hpke: float
    schema: float

    @property
    def crypto(self) -> float:
        """Ed25519 verify + HPKE open: what no implementation of the protocol can skip."""
        return self.verify + self.hpke


def crypto_floor(devices: list[SimDevice], items: list[tuple[str, bytes]], key: HubKeys) -> Floor:
    """Time each step over the same envelopes, best of three passes (CPU time, this thread)."""
    signers = {d.topic(): d.signer.verify_key for d in devices}
    sample = items[: min(len(items), 1000)]
    parts = [(signers[t], split(data)) for t, data in sample]
    opener = key.opening_key(parts[0][1][0].key_id)
    assert opener is not None
    plain = [opener.open(ct, info=raw) for _, (_, raw, ct, _) in parts]
    kind = parts[0][1][0].kind

    def best(step: Callable[[], None]) -> float:
        times = []
        for _ in range(3):
            started = time.thread_time()
            step()
            times.append((time.thread_time() - started) / len(parts))
        return min(times)

    def verify() -> None:
        for signer, (_, raw, ct, sig) in parts:
            signer.verify(sig, raw + ct)

    def hpke() -> None:
        for _, (_, raw, ct, _) in parts:
            opener.open(ct, info=raw)

    def schema() -> None:
        for body in plain:
            payload.decode(kind, body)

    return Floor(best(verify), best(hpke), best(schema))
