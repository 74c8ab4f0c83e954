"""The hand-off from paho's network thread to the ingest thread: a bounded queue, taken off in
batches.

Why it stays bounded: the broker should never have more than Receive Maximum unacknowledged
messages out to us (hub.mqtt.RECEIVE_MAXIMUM) and the queue holds twice that. If it is full
anyway, paho's thread waits for room (counted and logged) rather than drop: a dropped message
is redelivered only after a reconnect, and meanwhile keeps its Receive Maximum slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from hub.metrics import HubMetrics
from hub.mqtt import Incoming

log = logging.getLogger(__name__)


class Inbox:
    """offer() from paho's thread, take() from the ingest thread."""

    def __init__(self, size: int, metrics: HubMetrics, stopping: threading.Event) -> None:
        self.size = size
        self.metrics = metrics
        self._stopping = stopping
        self._queue: queue.Queue[Incoming] = queue.Queue(size)
        self._last_full_log = 0.0
        metrics.track_queue(self._queue.qsize)

    def offer(self, message: Incoming) -> None:
        """Hand a message over (paho's thread). If the queue is full, wait for room: that holds
        paho's reading back, and TCP holds the broker back. A message dropped here would never
        be redelivered on this connection (MQTT redelivers only on reconnect) and its Receive
        Maximum slot would stay taken, so enough drops would stall ingest for good."""
        try:
            self._queue.put_nowait(message)
            return
        except queue.Full:
            pass
        self.metrics.count("held", "queue_full")
        waited = 0.0
        while not self._stopping.is_set():
            try:
                self._queue.put(message, timeout=1.0)
                return
            except queue.Full:
                waited += 1.0
            now = time.monotonic()
            if now - self._last_full_log > 10:
                self._last_full_log = now
                log.warning(
                    "ingest queue full (%d) for %.0f s: holding the broker back", self.size, waited
                )
        # Stopping: not acknowledged, so the broker redelivers it on the next connection.
        self.metrics.count("dropped", "stopping")

    def take(self, max_messages: int, wait: bool = True) -> list[Incoming]:
        """One message (waiting up to 0.2 s for it if `wait`), then whatever is already waiting,
        up to max_messages: batches grow when commits are slow and stay small (low latency)
        when the hub keeps up. Empty if nothing came."""
        try:
            batch = [self._queue.get(timeout=0.2) if wait else self._queue.get_nowait()]
        except queue.Empty:
            return []
        while len(batch) < max_messages:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch
