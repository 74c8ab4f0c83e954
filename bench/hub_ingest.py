"""Hub ingest speed: sealed envelopes from simulated devices through a real Mosquitto into
`hedgerow-hub serve` (a subprocess with the real rules engine), on SQLite and PostgreSQL.

Drain (the default) measures capacity without a publisher competing for the CPU
(bench/hub/drain.py): N envelopes wait in the subscriber's persistent session at Mosquitto
while it is offline, and the clock runs from its connection to the last envelope acknowledged
(the reference: a bare paho subscriber) or stored with its rules run (the hub). Beside
envelopes/s it reports CPU seconds per envelope of the hub process and of its opening workers
(from /proc), next to the crypto floor, Ed25519 verify + HPKE open of the same bytes timed here
(bench/hub/cpu.py), so that envelopes/s per core can be read off.

Live (`--rate N`) publishes to a running hub at N/s, for the p50 and p99 from arrival to commit
(alert rows are written in that same transaction) below capacity. Targets: >= 4,000
envelopes/s per hub process; p99 <= 1 s.

    python -m bench.hub_ingest [--envelopes 20000] [--devices 200] [--blocked 1]
                               [--interval-s 300] [--backend both|sqlite|postgresql] [--rate N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hub.cpu import Floor, crypto_floor
from bench.hub.drain import DRAIN_BROKER, Drain, hub_drain, raw_drain
from bench.hub.workload import Items, envelopes, latency_from_metrics, publish
from hub.config import HubConfig
from hub.keys import HubKeys
from tests.hub_ingest_fixtures import enrol, make_hub, query, report_count, serving
from tests.services import Mosquitto, Postgres, free_port, mosquitto, postgres


def hub_live(
    config: HubConfig, broker: Mosquitto, items: Items, rate: float, port: int
) -> tuple[float, tuple[float, float]]:
    """(envelopes/s stored and rule-evaluated, (p50, p99) arrival->commit in s), published at
    `rate` to a running hub."""
    with serving(config) as proc:
        started = publish(broker, items, rate)
        while report_count(config) < len(items):
            if time.monotonic() - started > 600 or proc.poll() is not None:
                raise RuntimeError(f"stored {report_count(config)} of {len(items)}")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        return len(items) / elapsed, (
            latency_from_metrics(port, 0.5),
            latency_from_metrics(port, 0.99),
        )


def findings(config: HubConfig) -> int:
    """How many rule findings the run's alerts hold (opened plus bumped)."""
    return int(query(config, "SELECT COALESCE(SUM(count), 0) FROM alerts")[0][0])


def _backends(pg: Postgres, which: str) -> list[tuple[str, str | None, Postgres | None]]:
    backends: list[tuple[str, str | None, Postgres | None]] = []
    if which in ("both", "sqlite"):
        backends.append(("sqlite", None, None))
    if which in ("both", "postgresql"):
        backends.append(("postgresql", pg.create_database(), pg))
    return backends


def _workload(args: argparse.Namespace) -> str:
    return (
        f"{args.envelopes} envelopes from {args.devices} devices, each device's "
        f"{args.interval_s:g} s of device time apart, {args.blocked} blocked name(s) each"
    )


def run_drain(args: argparse.Namespace, tmp: Path, pg: Postgres) -> None:
    """Raw, SQLite and PostgreSQL drains, and the crypto floor, as one table."""
    rows: list[tuple[str, Drain, int]] = []
    floor: Floor | None = None
    for name, url, cluster in _backends(pg, args.backend):
        with mosquitto(DRAIN_BROKER) as broker:
            port = free_port()
            config = make_hub(tmp / name, broker.url, url, metrics=f"127.0.0.1:{port}")
            devices = [enrol(config) for _ in range(args.devices)]
            items = envelopes(devices, args.envelopes, args.blocked, args.interval_s)
            if floor is None:  # the bare crypto and the raw broker get the same bytes
                floor = crypto_floor(devices, items, HubKeys(config.keys_dir))
                with mosquitto(DRAIN_BROKER) as raw_broker:
                    raw = raw_drain(raw_broker, items)
                    rows.append(("raw broker (bare paho, ack only)", raw, 0))
            drain = hub_drain(broker, config, items, cluster, port)
            rows.append((f"hedgerow-hub serve, {name}", drain, findings(config)))
    assert floor is not None
    raw_rate = rows[0][1].rate
    print(
        f"\nDrain: {_workload(args)}, queued in an offline session; clock from connect to the "
        "last one acknowledged (raw) or stored with its rules (hub)"
    )
    print(
        f"{'path':<33} {'env/s':>5} {'vs raw':>6} | {'CPU ms/env: main':>16} {'workers':>7} "
        f"{'total':>5} {'env/s/core':>10} | {'broker':>6} {'db':>5} | {'batch':>5} {'finds':>5}"
    )
    for name, d, found in rows:
        db = "-" if d.db_cpu is None else f"{d.db_cpu * 1e3:.3f}"
        batch = "-" if d.mean_batch is None else f"{d.mean_batch:.0f}"
        print(
            f"{name:<33} {d.rate:>5.0f} {d.rate / raw_rate:>6.2f} | {d.main_cpu * 1e3:>16.3f} "
            f"{d.workers_cpu * 1e3:>7.3f} {d.cpu * 1e3:>5.3f} {1 / d.cpu:>10.0f} | "
            f"{d.broker_cpu * 1e3:>6.3f} {db:>5} | {batch:>5} {found if batch != '-' else '-':>5}"
        )
    print(
        f"crypto floor, same bytes, one core: Ed25519 verify {floor.verify * 1e3:.3f} ms + HPKE "
        f"open {floor.hpke * 1e3:.3f} ms = {floor.crypto * 1e3:.3f} ms/env "
        f"({1 / floor.crypto:.0f} env/s/core); + JSON schema {floor.schema * 1e3:.3f} ms"
    )
    for name, d, _ in rows[1:]:
        print(
            f"{name}: ceilings these CPU costs imply on this machine's cores: the hub process "
            f"(paho's thread and the ingest thread share one GIL) {1 / d.main_cpu:.0f} env/s "
            f"however many cores it has; each opening worker {1 / d.workers_cpu:.0f} env/s"
        )
    print(
        "CPU ms per envelope: main = the hub process (paho's thread and the ingest thread), or "
        "this script for the bare paho row; workers = the opening worker processes, less their "
        "start-up (measured on an idle start); broker = Mosquitto; db = the PostgreSQL "
        "cluster. batch = mean messages per commit; finds = rule findings in alerts"
    )


def run_live(args: argparse.Namespace, tmp: Path, pg: Postgres) -> None:
    """SQLite and PostgreSQL published to at --rate: envelopes/s and p50/p99 latency."""
    print(f"\nLive: {_workload(args)}, published at {args.rate:g}/s to a running hub")
    print(f"{'path':<36} {'env/s':>8} {'arrival->commit p50, p99':>26} {'finds':>6}")
    for name, url, _ in _backends(pg, args.backend):
        with mosquitto() as broker:
            port = free_port()
            config = make_hub(tmp / name, broker.url, url, metrics=f"127.0.0.1:{port}")
            devices = [enrol(config) for _ in range(args.devices)]
            items = envelopes(devices, args.envelopes, args.blocked, args.interval_s)
            rate, (p50, p99) = hub_live(config, broker, items, args.rate, port)
            latency = f"<= {p50:g} s, <= {p99:g} s"
            print(
                f"{'hedgerow-hub serve, ' + name:<36} {rate:>8.0f} {latency:>26} {findings(config):>6}"
            )


def main() -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envelopes", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--blocked", type=int, default=1, help="blocked names per summary")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="live mode: publish at this many envelopes/s to a running hub and report p50/p99 "
        "arrival->commit (meaningful below the hub's capacity); default: drain",
    )
    parser.add_argument(
        "--interval-s",
        type=float,
        default=300,
        help="device time between one device's reports (default 300: a summary every 5 "
        "minutes); 0 stamps every report now, crowding the rules' sliding windows",
    )
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-hub-") as tmp, postgres() as pg:
        if args.rate > 0:
            run_live(args, Path(tmp), pg)
        else:
            run_drain(args, Path(tmp), pg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
