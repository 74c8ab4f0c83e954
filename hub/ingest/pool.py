"""Worker processes that open envelopes (hub.ingest.opening) beside the ingest thread.

Ed25519 verification, HPKE opening and JSON decoding are most of a report's CPU cost, and HPKE
opening holds the GIL, so threads cannot share it out: processes can. The ingest thread sends
a batch's jobs in one chunk per worker, works on the previous batch's database transaction
meanwhile, then collects the results in order.

A worker that dies, hangs or fails is replaced, and that batch is opened in the ingest thread
instead: nothing is acknowledged before it is committed, so nothing is lost. Workers are
started with 'spawn' (no copy of the hub's memory or threads) and read the keys themselves.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from hub.ingest.opening import READY, Job, Reply, serve

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("spawn")
MIN_CHUNK = 8  # smaller batches go to fewer workers: a round trip costs ~0.1 ms
REPLY_TIMEOUT_S = 60.0  # a worker silent this long with a chunk is hung: replace it
PAUSE_S = 30.0  # after a worker failed before answering once: open here this long


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False  # it said READY: it can load the keys and start
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Submitted:
    """Chunks sent to workers for one batch: (worker index, number of envelopes) in order."""

    parts: tuple[tuple[int, int], ...]


class OpeningPool:
    """`processes` workers; start(), then submit() and results() from one thread, stop()."""

    def __init__(
        self, keys_dir: Path, processes: int, on_replace: Callable[[], None] | None = None
    ) -> None:
        self.keys_dir = keys_dir
        self.processes = processes
        self._on_replace = on_replace
        self._workers: list[_Worker | None] = [None] * processes
        self._paused_until = 0.0

    def _spawn(self) -> _Worker:
        """A new worker; its first message (READY) is read with its first results."""
        ours, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=serve, args=(theirs, str(self.keys_dir)), name="hub-opening", daemon=True
        )
        process.start()
        theirs.close()  # only the worker holds its end: its exit is our EOF
        return _Worker(process, ours)

    def start(self) -> None:
        """Start the workers. Until one has loaded the keys (READY), submit() declines and
        batches are opened in the calling thread: starting never holds ingest up."""
        for i in range(self.processes):
            self._workers[i] = self._spawn()
        log.info("%d opening worker process(es) started", self.processes)

    def _ready_now(self, i: int) -> bool:
        """True if worker i has said READY (read without waiting)."""
        worker = self._workers[i]
        if worker is None:
            return False
        if not worker.ready:
            try:
                if not worker.conn.poll(0):
                    return False
            except (OSError, ValueError):
                return False
            if self._next(i) == READY:
                self._ready(i)
            worker = self._workers[i]
        return worker is not None and worker.ready

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers that are ready and take work (for tests and logs)."""
        return [w.process.pid for w in self._workers if w is not None and w.ready and w.process.pid]

    def submit(self, jobs: Sequence[Job]) -> Submitted | None:
        """Send the jobs to the workers in contiguous chunks; None if the pool is paused or a
        worker could not take its chunk (open them in the calling thread then)."""
        if not jobs or time.monotonic() < self._paused_until:
            return None
        for i, worker in enumerate(self._workers):
            if worker is None:
                self._workers[i] = self._spawn()
        ready = [i for i in range(self.processes) if self._ready_now(i)]
        if not ready:
            return None
        n = max(1, min(len(ready), len(jobs) // MIN_CHUNK))
        size = -(-len(jobs) // n)
        parts: list[tuple[int, int]] = []
        for i, start in zip(ready, range(0, len(jobs), size), strict=False):
            chunk = list(jobs[start : start + size])
            worker = self._workers[i]
            assert worker is not None
            try:
                worker.conn.send(chunk)
            except (OSError, ValueError) as exc:
                self._drain(parts)
                self._replace(i, f"cannot take work: {exc!r}")
                return None
            parts.append((i, len(chunk)))
        return Submitted(tuple(parts))

    def results(self, submitted: Submitted) -> list[Reply] | None:
        """The results of a submission, in order; None if any worker failed (it is replaced)."""
        results: list[Reply] = []
        failed = False
        for i, count in submitted.parts:
            reply = self._results_of(i)
            if reply is not None and len(reply) == count:
                results.extend(reply)
            else:
                failed = True
        return None if failed else results

    def _drain(self, parts: Sequence[tuple[int, int]]) -> None:
        for i, _ in parts:
            self._results_of(i)

    def _ready(self, i: int) -> None:
        worker = self._workers[i]
        if worker is not None:
            worker.ready = True
            log.info(
                "opening worker %s ready after %.1f s",
                worker.process.pid,
                time.monotonic() - worker.started,
            )

    def _results_of(self, i: int) -> list[Reply] | None:
        """The worker's next results; None if it failed (and was replaced)."""
        while True:
            reply = self._next(i)
            if reply != READY:
                break
            self._ready(i)  # a replacement's first word: its results come next
        if reply is not None and not isinstance(reply, list):
            log.error("opening worker failed on a chunk: %s", reply)
            return None
        return reply

    def _next(self, i: int, timeout: float = REPLY_TIMEOUT_S) -> object:
        """The worker's next message; None if it died or hung (it is replaced)."""
        worker = self._workers[i]
        assert worker is not None
        deadline = time.monotonic() + timeout
        try:
            while not worker.conn.poll(0.5):
                if not worker.process.is_alive():
                    self._replace(i, f"died (exit code {worker.process.exitcode})")
                    return None
                if time.monotonic() > deadline:
                    self._replace(i, f"sent nothing for {timeout:.0f} s")
                    return None
            reply: object = worker.conn.recv()
        except (EOFError, OSError) as exc:
            worker.process.join(1.0)
            self._replace(i, f"went away ({exc!r}, exit code {worker.process.exitcode})")
            return None
        return reply

    def _replace(self, i: int, why: str) -> None:
        worker = self._workers[i]
        assert worker is not None
        log.warning(
            "opening worker %s %s: opening its batch here, replacing it", worker.process.pid, why
        )
        self._end(worker, 0.0)
        self._workers[i] = None
        if self._on_replace is not None:
            self._on_replace()
        if worker.ready:
            self._workers[i] = self._spawn()
        else:  # it may never start (unreadable keys...): do not spawn one per batch
            self._paused_until = time.monotonic() + PAUSE_S
            log.error(
                "opening worker failed before its first answer: opening here for %d s", PAUSE_S
            )

    @staticmethod
    def _end(worker: _Worker, timeout: float) -> None:
        worker.process.join(timeout)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5.0)
        worker.conn.close()
        worker.process.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every worker to finish, wait for it (kill it if it will not go)."""
        for worker in self._workers:
            if worker is not None:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)
        for i, worker in enumerate(self._workers):
            if worker is not None:
                self._end(worker, timeout)
                self._workers[i] = None
