"""End to end: a pupil's blocked query on the school DNS filter becomes an alert at the hub.

Real processes and services: Mosquitto, `hedgerow-hub serve`, `hedgerow-dns serve` (enrolled
as a sinkhole from an offline bundle) and `dig`. Reports travel sealed; while the broker is
down they wait in the filter's spool and arrive afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.dns.cli import main as dns_main
from common.identity import Identity
from hub.cli import main as hub_main
from hub.config import HubConfig
from tests.dns_support import FakeUpstream, dig, free_dns_port, write_config
from tests.hub_ingest_fixtures import make_hub, query
from tests.services import Mosquitto, stop_process
from tests.waiting import wait_until

BIN = Path(sys.executable).parent


@contextmanager
def daemon(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Hedgerow daemon in a subprocess, stopped by its PID with SIGTERM."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([*args], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def reports(hub: HubConfig, kind: str) -> int:
    return int(
        query(hub, "SELECT COUNT(*) FROM reports WHERE device = 'dns-1' AND kind = ?", (kind,))[0][
            0
        ]
    )


def blocked_names(hub: HubConfig) -> set[str]:
    return {row[0] for row in query(hub, "SELECT name FROM blocked")}


def test_blocked_query_reaches_the_hub_as_an_alert(tmp_path: Path, broker: Mosquitto) -> None:
    hub = make_hub(tmp_path, broker.url, None)
    bundle = tmp_path / "dns-1.bundle"
    assert (
        hub_main(
            [
                "enroll",
                "bundle",
                "--config",
                str(hub.path),
                "--device",
                "dns-1",
                "--class",
                "sinkhole",
                "--broker",
                broker.url,
                "--out",
                str(bundle),
            ]
        )
        == 0
    )
    identity_dir = tmp_path / "dns-identity"
    with FakeUpstream() as upstream:
        port = free_dns_port()
        report = (
            f'[report]\nhub = "{broker.url}"\nidentity = "{identity_dir}"\n'
            'interval_s = 10\nimmediate = ["adult"]\n'
        )
        config = write_config(tmp_path, [upstream.address], port, extra=report)
        assert dns_main(["enroll", "--config", str(config), "--bundle", str(bundle)]) == 0
        assert Identity.load(identity_dir).device_class == "sinkhole"
        env_bin = str(BIN)
        with (
            daemon(
                f"{env_bin}/hedgerow-hub",
                "serve",
                "--config",
                str(hub.path),
                log=tmp_path / "hub.log",
            ),
            daemon(
                f"{env_bin}/hedgerow-dns",
                "serve",
                "--config",
                str(config),
                log=tmp_path / "dns.log",
            ),
        ):
            wait_until(lambda: _answers(port), what="hedgerow-dns to answer")
            # The hub's first subscription creates its session: before it, the broker would
            # drop the event (there is no session to hold it yet on a first start).
            hub_log = tmp_path / "hub.log"
            wait_until(lambda: "hedgerow-hub serving" in hub_log.read_text(), what="the hub")
            # An immediate category: a sealed event goes at once, and the hub raises an alert.
            assert "0.0.0.0" in dig(port, "adult.example", "+short", source="127.0.1.10")
            # Generous deadlines: on a loaded CI machine the hub's first opening worker has
            # taken 10 s to start (the hub opens in its own thread meanwhile, more slowly).
            wait_until(lambda: reports(hub, "event") >= 1, timeout=90, what="the immediate event")
            wait_until(lambda: _alerts(hub), timeout=90, what="a blocked-content alert")
            alert = _alerts(hub)[0]
            assert alert["rule"] == "blocked_content" and int(str(alert["severity"])) >= 4
            assert alert["device"] == "dns-1"
            # The window's summary carries the DfE fields: client IP, group, what was blocked.
            pupil = "SELECT body FROM reports WHERE kind = 'summary' AND client_ip = '127.0.1.10'"
            wait_until(lambda: bool(query(hub, pupil)), timeout=40, what="the pupil's summary")
            body = json.loads(query(hub, pupil)[0][0])
            assert body["client"]["group"] == "pupils" and body["source"] == "dns"
            assert {"name": "adult.example", "category": "adult", "count": 1} in body["blocked"]
            # Broker outage: the filter keeps answering and spools; nothing is lost.
            broker.stop()
            assert "0.0.0.0" in dig(port, "casino.example", "+short", source="127.0.1.11")
            summaries_before = reports(hub, "summary")
            broker.start()
            wait_until(
                lambda: "casino.example" in blocked_names(hub),
                timeout=60,
                what="the spooled summary after the outage",
            )
            assert reports(hub, "summary") > summaries_before
        rejected = query(hub, "SELECT COUNT(*) FROM rejections")[0][0]
        assert rejected == 0, (tmp_path / "hub.log").read_text()[-3000:]


def _answers(port: int) -> bool:
    try:
        dig(port, "staff.example", "+short")
        return True
    except AssertionError:
        return False


def _alerts(hub: HubConfig) -> list[dict[str, object]]:
    out = subprocess.run(
        [f"{BIN}/hedgerow-hub", "alerts", "--config", str(hub.path), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    ).stdout
    return [a for a in json.loads(out) if a["rule"] == "blocked_content"]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
