"""Ingest with the dashboard open: the same drain as bench/hub_ingest.py (envelopes queued in
the hub's offline session, clock from connection to the last one stored with its rules), once
alone, once with people refreshing the dashboard (clients that log in and reload /alerts and
an alert's page every `period` s), and once with continuous refresh as a stress figure.

    python -m bench.hub.dashboard_load [--envelopes 10000] [--devices 200] [--clients 2]
                                       [--period-s 1.5] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.hub.drain import DRAIN_BROKER, Drain, hub_drain
from bench.hub.workload import envelopes
from hub.config import HubConfig, load_config
from tests.hub_ingest_fixtures import enrol, make_hub
from tests.services import Mosquitto, Postgres, free_port, mosquitto, postgres
from tests.web_support import PASSWORD, DashboardHub, http, hub_cli, login_cookie

USER = "bench-dsl"


@dataclass
class Load:
    """People with the dashboard open: each client logs in, then reloads /alerts and the first
    alert's page every `period_s` (0: as fast as answers come back)."""

    hub: DashboardHub
    clients: int
    period_s: float
    pages: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, name=f"dashboard-{i}", daemon=True)
            for i in range(self.clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self) -> None:
        cookie: str | None = None
        while not self._stop.is_set():
            try:
                if cookie is None:
                    cookie = login_cookie(self.hub, USER)
                listing = http(self.hub, "GET", "/alerts?status=all", cookie=cookie)
                found = re.search(r'href="/alerts/(\d+)"', listing.body)
                self.pages += 1
                if found is not None:
                    detail = http(self.hub, "GET", f"/alerts/{found.group(1)}", cookie=cookie)
                    self.pages += 1 if detail.status == 200 else 0
                if listing.status != 200:
                    cookie = None
            except (OSError, AssertionError):
                self.errors += 1  # the hub is between its two starts: try again shortly
                cookie = None
                self._stop.wait(0.2)
                continue
            if self.period_s:
                self._stop.wait(self.period_s)


def _dashboard_hub(root: Path, broker: Mosquitto, url: str | None) -> tuple[HubConfig, int]:
    config = make_hub(root, broker.url, url, metrics=f"127.0.0.1:{free_port()}")
    web_port = free_port()
    text = config.path.read_text()
    text = re.sub(r'\[web\]\nlisten = "[^"]*"\n', f'[web]\nlisten = "127.0.0.1:{web_port}"\n', text)
    config.path.write_text(text)
    done = hub_cli(
        "user", "add", USER, "--role", "dsl", "--config", str(config.path), "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return load_config(config.path), web_port


def one_run(
    args: argparse.Namespace, root: Path, url: str | None, pg: Postgres | None, period: float | None
) -> tuple[Drain, Load | None]:
    """A drain on a fresh hub, with `args.clients` refreshing every `period` s (None: none)."""
    with mosquitto(DRAIN_BROKER) as broker:
        config, web_port = _dashboard_hub(root, broker, url)
        devices = [enrol(config) for _ in range(args.devices)]
        items = envelopes(devices, args.envelopes, 1, 300)
        load = None
        if period is not None:
            hub = DashboardHub(config.path, web_port, config.path.parent / "serve.log", None)  # type: ignore[arg-type]
            load = Load(hub, args.clients, period)
            load.start()
        try:
            metrics_port = int(str(config.table("metrics")["listen"]).rpartition(":")[2])
            drain = hub_drain(broker, config, items, pg, metrics_port)
        finally:
            if load is not None:
                load.stop()
        return drain, load


def main() -> int:
    """Run the three drains per backend and print envelopes/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envelopes", type=int, default=10000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--period-s", type=float, default=1.5)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    print(
        f"Drain of {args.envelopes} envelopes from {args.devices} devices; dashboard: "
        f"{args.clients} logged-in clients reloading /alerts and an alert page"
    )
    print(f"{'backend':<11} {'dashboard':<26} {'env/s':>6} {'vs alone':>8} {'pages':>6}")
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-dash-") as tmp, postgres() as pg:
        backends: list[tuple[str, str | None, Postgres | None]] = []
        if args.backend in ("both", "sqlite"):
            backends.append(("sqlite", None, None))
        if args.backend in ("both", "postgresql"):
            backends.append(("postgresql", "", pg))
        for name, _, cluster in backends:
            alone: float | None = None
            runs = (
                ("closed", None),
                (f"open, every {args.period_s:g} s", args.period_s),
                ("continuous refresh", 0.0),
            )
            for i, (label, period) in enumerate(runs):
                url = cluster.create_database() if cluster is not None else None
                drain, load = one_run(args, Path(tmp) / f"{name}-{i}", url, cluster, period)
                alone = drain.rate if alone is None else alone
                pages = "-" if load is None else str(load.pages)
                print(
                    f"{name:<11} {label:<26} {drain.rate:>6.0f} {drain.rate / alone:>8.2f} "
                    f"{pages:>6}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
