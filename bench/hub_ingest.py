"""Hub ingest speed: sealed envelopes from simulated devices through a real Mosquitto into
`hedgerow-hub serve` (a subprocess with the real rules engine), on SQLite and PostgreSQL.

The reference, in the same run: the raw broker rate, the same envelopes to a bare paho
subscriber that only acknowledges. Targets: >= 4,000 envelopes/s per hub process; p99 from
arrival to commit (alert rows are written in that same transaction) <= 1 s.

    python -m bench.hub_ingest [--envelopes 5000] [--devices 200] [--blocked 1] [--rate N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.wire import SealingKey
from hub.datadir import init_data_dir
from hub.keys import HubKeys
from tests.hub_ingest_fixtures import SimDevice, enrol, make_hub, publisher, report_count, summary
from tests.services import Mosquitto, free_port, mosquitto, postgres, stop_process

ROOT = Path(__file__).resolve().parent.parent


def envelopes(devices: list[SimDevice], total: int, blocked: int) -> list[tuple[str, bytes]]:
    """`total` sealed summaries, round-robin over the devices (sealed before timing starts)."""
    out = []
    for i in range(total):
        d = devices[i % len(devices)]
        out.append((d.topic(), d.envelope(summary(blocked=blocked, n=i))))
    return out


def publish(broker: Mosquitto, items: list[tuple[str, bytes]], rate: float = 0) -> float:
    """Publish everything QoS 1, as fast as the broker takes it or at `rate` per second (in
    slices of 1/20 s); return the start time."""
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
            info.wait_for_publish(300)
    return started


def raw_rate(broker: Mosquitto, items: list[tuple[str, bytes]]) -> float:
    """Envelopes/s to a bare paho subscriber that just acknowledges (manual acks, QoS 1)."""
    got = [0]
    done = threading.Event()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-raw",
        protocol=paho.MQTTv5,
        manual_ack=True,
    )

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        c.ack(msg.mid, msg.qos)
        got[0] += 1
        if got[0] == len(items):
            done.set()

    client.on_message = on_message
    host, port = broker.url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.subscribe("hedgerow/v1/+/+/+", qos=1)
    client.loop_start()
    try:
        time.sleep(0.5)  # subscription in place
        started = publish(broker, items)
        if not done.wait(300):
            raise RuntimeError(f"raw subscriber got {got[0]} of {len(items)}")
        return len(items) / (time.monotonic() - started)
    finally:
        client.disconnect()
        client.loop_stop()


def latency_from_metrics(port: int, quantile: float) -> float:
    """A quantile of arrival->commit from the hub's histogram (its bucket's upper bound)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("hedgerow_hub_ingest_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1]
    return next(le for le, n in buckets if n >= quantile * total)


def hub_rate(
    broker: Mosquitto, root: Path, url: str | None, args: argparse.Namespace
) -> tuple[float, tuple[float, float]]:
    """(envelopes/s stored and rule-evaluated, (p50, p99) arrival->commit in s) for one
    backend."""
    metrics_port = free_port()
    config = make_hub(root, broker.url, url, metrics=f"127.0.0.1:{metrics_port}")
    devices = [enrol(config) for _ in range(args.devices)]
    items = envelopes(devices, args.envelopes, args.blocked)
    log = root / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--config", str(config.path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while "hedgerow-hub serving" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        started = publish(broker, items, args.rate)
        while report_count(config) < len(items):
            if time.monotonic() - started > 600 or proc.poll() is not None:
                raise RuntimeError(f"stored {report_count(config)} of {len(items)}")
            time.sleep(0.05)
        rate = len(items) / (time.monotonic() - started)
        return rate, (
            latency_from_metrics(metrics_port, 0.5),
            latency_from_metrics(metrics_port, 0.99),
        )
    finally:
        stop_process(proc)


def main() -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envelopes", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--blocked", type=int, default=1, help="blocked names per summary")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="publish at this many envelopes/s (default: as fast as possible); the p99 is "
        "meaningful below the hub's capacity, a burst only measures its queue",
    )
    args = parser.parse_args()
    rows: list[tuple[str, float, tuple[float, float] | None]] = []
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-hub-") as tmp, postgres() as pg:
        with mosquitto() as broker:
            key = _hub_key(Path(tmp))
            probe = [SimDevice(f"raw-{i}", key) for i in range(args.devices)]
            items = envelopes(probe, args.envelopes, args.blocked)
            rows.append(("raw broker (bare paho, ack only)", raw_rate(broker, items), None))
        for name, url in (("sqlite", None), ("postgresql", pg.create_database())):
            with mosquitto() as broker:
                rate, latency = hub_rate(broker, Path(tmp) / name, url, args)
                rows.append((f"hedgerow-hub serve, {name}", rate, latency))
    raw = rows[0][1]
    pace = f"published at {args.rate:g}/s" if args.rate > 0 else "published as one burst"
    print(
        f"\n{args.envelopes} envelopes, {args.devices} devices, {args.blocked} blocked name(s) "
        f"each, {pace}"
    )
    print(f"{'path':<36} {'env/s':>8} {'vs raw':>7} {'arrival->commit p50, p99':>26}")
    for name, rate, latency in rows:
        text = "-" if latency is None else f"<= {latency[0]:g} s, <= {latency[1]:g} s"
        print(f"{name:<36} {rate:>8.0f} {rate / raw:>7.2f} {text:>26}")
    return 0


def _hub_key(root: Path) -> SealingKey:
    """A throwaway hub key for the raw run's envelopes (same sizes as the real ones)."""
    config = init_data_dir(root / "raw", "raw")
    return HubKeys(config.parent / "keys").sealing_key


if __name__ == "__main__":
    sys.exit(main())
