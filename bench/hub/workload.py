"""The workload: sealed summaries from simulated devices, published QoS 1 through a real
Mosquitto, and `hedgerow-hub serve` as a subprocess with its metrics endpoint."""

from __future__ import annotations

import time
import urllib.request

from tests.hub_ingest_fixtures import SimDevice, publisher, summary
from tests.services import Mosquitto

Items = list[tuple[str, bytes]]  # (topic, envelope)


def envelopes(devices: list[SimDevice], total: int, blocked: int, interval_s: float = 0) -> Items:
    """`total` sealed summaries, round-robin over the devices (sealed before timing starts).
    With `interval_s`, each device's reports are that far apart in device time, the last one
    now: what a hub that was down finds queued (a real filter sends one per client every few
    minutes); 0 stamps them all now, which crowds every sliding window of the rules."""
    out = []
    now_ms = int(time.time() * 1000)
    rounds = -(-total // len(devices))
    for i in range(total):
        d = devices[i % len(devices)]
        at = now_ms - int((rounds - 1 - i // len(devices)) * interval_s * 1000)
        out.append((d.topic(), d.envelope(summary(blocked=blocked, n=i), time_ms=at)))
    return out


def publish(broker: Mosquitto, items: Items, rate: float = 0) -> float:
    """Publish everything QoS 1, as fast as the broker takes it or at `rate` per second (in
    slices of 1/20 s), and wait until the broker has all of it; return when it started."""
    started = time.monotonic()
    with publisher(broker.url, "bench-publisher") as pub:
        if rate <= 0:
            infos = [pub.send(topic, payload, wait=False) for topic, payload in items]
        else:
            infos, step = [], max(1, int(rate / 20))
            for i in range(0, len(items), step):
                infos += [pub.send(t, p, wait=False) for t, p in items[i : i + step]]
                time.sleep(max(0.0, started + (i + step) / rate - time.monotonic()))
        for info in infos:
            info.wait_for_publish(600)
    return started


def _metrics_text(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    return str(urllib.request.urlopen(url, timeout=10).read().decode())


def metric(port: int, name: str) -> float:
    """One sample of the hub's metrics endpoint."""
    for line in _metrics_text(port).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise RuntimeError(f"no {name} in the hub's metrics")


def latency_from_metrics(port: int, quantile: float) -> float:
    """A quantile of arrival->commit from the hub's histogram (its bucket's upper bound)."""
    buckets = []
    for line in _metrics_text(port).splitlines():
        if line.startswith("hedgerow_hub_ingest_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1]
    return next(le for le, n in buckets if n >= quantile * total)
