"""Drain: N envelopes wait at Mosquitto in a subscriber's persistent session (clean start off,
a session expiry) while it is offline; then it connects, and the clock runs from its connection
to the last envelope acknowledged (a bare paho subscriber) or stored with its rules run
(`hedgerow-hub serve`). No publisher competes for the CPU meanwhile."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.hub.cpu import children_cpu, own_cpu, postgres_cpu, process_cpu, self_cpu
from bench.hub.workload import Items, metric, publish
from common.wire.topics import up_filter
from hub.config import HubConfig
from hub.mqtt import RECEIVE_MAXIMUM
from tests.hub_ingest_fixtures import report_count, serving
from tests.services import Mosquitto, Postgres

# Mosquitto keeps every queued message of an offline session (0: no limit) and lets a
# subscriber have as many unacknowledged as its Receive Maximum (explicit here, not left to
# tests/services.py's defaults).
DRAIN_BROKER = "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
SESSION_EXPIRY_S = 3600


@dataclass(frozen=True, slots=True)
class Drain:
    """One drain: envelopes/s from connection to the last one done, and CPU s per envelope."""

    rate: float
    main_cpu: float  # the subscriber's process (the hub's: paho's and the ingest thread)
    workers_cpu: float  # the hub's opening worker processes
    broker_cpu: float
    db_cpu: float | None = None  # the PostgreSQL cluster
    mean_batch: float | None = None  # messages per committed batch (the hub's histogram)

    @property
    def cpu(self) -> float:
        """CPU s per envelope of the subscriber, all its processes."""
        return self.main_cpu + self.workers_cpu


def _raw_client() -> paho.Client:
    return paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-raw",
        protocol=paho.MQTTv5,
        manual_ack=True,
    )


def _connect_persistent(client: paho.Client, broker: Mosquitto) -> None:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = RECEIVE_MAXIMUM  # what the hub asks for
    host, port = broker.url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port), clean_start=False, properties=props)


def raw_drain(broker: Mosquitto, items: Items) -> Drain:
    """A bare paho subscriber that only acknowledges: from its connection to the last
    acknowledgement, and the CPU of this process, which then runs nothing but paho's thread."""
    subscribed = threading.Event()
    setup = _raw_client()
    setup.on_subscribe = lambda *a: subscribed.set()
    _connect_persistent(setup, broker)
    setup.loop_start()
    setup.subscribe(up_filter(), qos=1)
    if not subscribed.wait(30):
        raise RuntimeError("raw subscriber: no SUBACK")
    setup.disconnect()
    setup.loop_stop()
    publish(broker, items)  # queued in the offline session

    got = [0]
    done = threading.Event()
    client = _raw_client()

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        c.ack(msg.mid, msg.qos)
        got[0] += 1
        if got[0] == len(items):
            done.set()

    client.on_message = on_message
    cpu, broker_cpu = self_cpu(), process_cpu(broker.proc.pid)
    started = time.monotonic()
    _connect_persistent(client, broker)
    client.loop_start()
    try:
        if not done.wait(600):
            raise RuntimeError(f"raw subscriber got {got[0]} of {len(items)}")
        elapsed = time.monotonic() - started
        n = len(items)
        return Drain(
            n / elapsed,
            (self_cpu() - cpu) / n,
            0.0,
            (process_cpu(broker.proc.pid) - broker_cpu) / n,
        )
    finally:
        client.disconnect()
        client.loop_stop()


def hub_drain(
    broker: Mosquitto, config: HubConfig, items: Items, pg: Postgres | None, metrics_port: int
) -> Drain:
    """The hub's session holds the envelopes: from its connection to the last one stored."""
    # First start: creates the hub's session and subscription at the broker, and measures what
    # the opening workers cost to start (spawn, imports, keys), which is not per envelope.
    with serving(config) as proc:
        time.sleep(3.0)  # the workers have loaded the keys and idle
        workers_start_cpu = children_cpu(proc.pid)
    publish(broker, items)  # queued in the offline session
    with serving(config, ready="connected to", poll=0.005) as proc:
        started = time.monotonic()
        main, broker_cpu, db_cpu = own_cpu(proc.pid), process_cpu(broker.proc.pid), postgres_cpu(pg)
        while report_count(config) < len(items):
            if time.monotonic() - started > 900 or proc.poll() is not None:
                raise RuntimeError(f"stored {report_count(config)} of {len(items)}")
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        n = len(items)
        workers = max(0.0, children_cpu(proc.pid) - workers_start_cpu)
        return Drain(
            n / elapsed,
            (own_cpu(proc.pid) - main) / n,
            workers / n,
            (process_cpu(broker.proc.pid) - broker_cpu) / n,
            None if pg is None else (postgres_cpu(pg) - db_cpu) / n,
            metric(metrics_port, "hedgerow_hub_batch_size_sum")
            / metric(metrics_port, "hedgerow_hub_batch_size_count"),
        )
