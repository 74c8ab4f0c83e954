"""The ingest thread's own CPU per envelope, in process, without MQTT or worker processes:
screening and committing batches of 500 (store, rules, commit) with the real rules engine,
the workers' part done beforehand in this process and not counted.

    python -m bench.hub.ingest_thread [--backend sqlite|postgresql] [--envelopes 10000]
                                      [--interval-s 300] [--profile]

A quick, steady figure for changes to hub/ingest, hub/store and hub/rules (CPU time of this
thread; the PostgreSQL server's work is not in it).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.hub.workload import envelopes
from hub.ingest.ahead import jobs_of, merge, screen_batch
from hub.ingest.commit import Committer
from hub.ingest.directory import CachedDirectory
from hub.ingest.opening import open_all
from hub.ingest.pipeline import Opener
from hub.keys import HubKeys
from hub.metrics import HubMetrics
from hub.mqtt import Incoming
from hub.notify.outbox import NotificationOutbox
from hub.rules.engine import RuleEngine
from hub.rules.settings import load_rules
from hub.store import Database
from hub.store.replay_guard import StoreReplayGuard
from tests.hub_ingest_fixtures import enrol, make_hub
from tests.services import postgres


def main() -> int:
    """Run it and print ms per envelope (and the profile with --profile)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--envelopes", type=int, default=10000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--interval-s", type=float, default=300)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    args = parser.parse_args()
    cluster = postgres() if args.backend == "postgresql" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, cluster as pg:
        url = pg.create_database() if pg is not None else None
        config = make_hub(Path(tmp), "mqtt://127.0.0.1:1", url)
        devices = [enrol(config) for _ in range(args.devices)]
        items = envelopes(devices, args.envelopes, 1, args.interval_s)
        keys = HubKeys(config.keys_dir)
        db = Database(config.database_url)
        opener = Opener(CachedDirectory(db), keys, StoreReplayGuard(db))
        engine = RuleEngine(load_rules(config), NotificationOutbox(config))
        committer = Committer(
            ack=lambda m: True, metrics=HubMetrics(), rules=engine, enroll=None, publish=None
        )
        now = int(time.time() * 1000)
        messages = [
            Incoming(t, p, i, 1, 0, now, time.monotonic()) for i, (t, p) in enumerate(items)
        ]
        profile = cProfile.Profile()
        cpu, previous = 0.0, set[tuple[str, str, int]]()
        for start in range(0, len(messages), 500):
            batch = messages[start : start + 500]
            started = time.thread_time()
            with profile if args.profile else contextlib.nullcontext():
                screened, sent = screen_batch(opener, batch, previous)
            cpu += time.thread_time() - started
            opened = merge(screened, open_all(jobs_of(screened), keys, {}))  # the workers' part
            started = time.thread_time()
            with profile if args.profile else contextlib.nullcontext():
                committer.commit(db, opener, batch, with_rules=True, opened=opened)
            cpu += time.thread_time() - started
            previous = sent
        findings = db.execute("SELECT COALESCE(SUM(count), 0) FROM alerts")[0][0]
        db.close()
    print(
        f"{args.backend}: ingest thread {cpu / len(messages) * 1e3:.3f} ms/envelope "
        f"({args.envelopes} envelopes, {findings} rule findings)"
    )
    if args.profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
