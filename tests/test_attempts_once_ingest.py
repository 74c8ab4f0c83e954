"""Each blocked attempt counted once through the real hub: a Pi's "blocked" event and the
summary counting the same lookup, sealed and published to a real Mosquitto and ingested by
`hedgerow-hub serve`, in either order, in one batch or two, and delivered twice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common.wire import Kind
from hub.config import HubConfig
from tests.hub_ingest_fixtures import SimDevice, enrol, make_hub, publisher, query, serving
from tests.services import Mosquitto
from tests.waiting import wait_until

MINUTE = 60_000


def blocked_event(ip: str, at: int) -> dict[str, Any]:
    """The immediate event hedgerow-dns sends for a lookup in an immediate category."""
    return {
        "v": 1,
        "type": "blocked",
        "category": "adult",
        "name": "adult.example",
        "client": {"ip": ip, "group": "pupils"},
        "at": at,
        "count": 1,
    }


def window_summary(ip: str, at: int) -> dict[str, Any]:
    """The summary of the window holding that lookup: one adult attempt."""
    return {
        "v": 1,
        "source": "dns",
        "start": at - MINUTE,
        "end": at + MINUTE,
        "client": {"ip": ip, "group": "pupils"},
        "counts": {"blocked": 1, "resolved": 9},
        "categories": {"adult": 1},
        "blocked": [{"name": "adult.example", "category": "adult", "count": 1}],
        "first_seen": at - MINUTE + 500,
        "last_seen": at,
    }


def stored(hub: HubConfig) -> int:
    return int(query(hub, "SELECT COUNT(*) FROM reports")[0][0])


def attempts(hub: HubConfig, ip: str) -> int:
    sql = "SELECT COALESCE(SUM(count), 0) FROM attempts WHERE client_ip = ? AND category = ?"
    return int(query(hub, sql, (ip, "adult"))[0][0])


def alert_counts(hub: HubConfig, ip: str) -> list[int]:
    rows = query(
        hub,
        "SELECT count FROM alerts WHERE rule = 'blocked_content' AND dedup_key = ?",
        (f"adult@{ip}",),
    )
    return [int(row[0]) for row in rows]


def test_event_and_summary_count_one_attempt_in_any_order(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = make_hub(tmp_path, broker.url, None)
    pi: SimDevice = enrol(hub, "pi-1", device_class="sinkhole")
    at = int(time.time() * 1000) - 5 * MINUTE
    late, together = "10.0.3.17", "10.0.3.18"
    with serving(hub), publisher(broker.url) as pub:
        # The summary first, then its event (re-sent after it, with its older seq)...
        event = pi.envelope(blocked_event(late, at), kind=Kind.EVENT, seq=1, time_ms=at)
        summary = pi.envelope(window_summary(late, at), seq=2, time_ms=at + MINUTE)
        pub.send(pi.topic(), summary)
        wait_until(lambda: stored(hub) == 1, what="the summary")
        pub.send(pi.topic(Kind.EVENT), event)
        wait_until(lambda: stored(hub) == 2, what="the event")
        # ...both delivered again (stored once, counted once)...
        pub.send(pi.topic(Kind.EVENT), event)
        pub.send(pi.topic(), summary)
        # ...and another client's event and summary back to back, as the filter sends them.
        pub.send(
            pi.topic(Kind.EVENT),
            pi.envelope(blocked_event(together, at), kind=Kind.EVENT, seq=3, time_ms=at),
            wait=False,
        )
        pub.send(pi.topic(), pi.envelope(window_summary(together, at), seq=4, time_ms=at + MINUTE))
        wait_until(lambda: stored(hub) == 4, what="the second client's reports")
        # A last report, published after the redeliveries: once it is stored, they were judged.
        pub.send(
            pi.topic(Kind.HEARTBEAT),
            pi.envelope({"v": 1, "uptime_s": 5, "policy_version": 0}, kind=Kind.HEARTBEAT, seq=5),
        )
        wait_until(lambda: stored(hub) == 5, what="the last report")
    assert query(hub, "SELECT COUNT(*) FROM rejections")[0][0] == 0  # redeliveries are no replays
    for ip in (late, together):
        assert attempts(hub, ip) == 1
        assert alert_counts(hub, ip) == [1]  # x1
    texts = [row[0] for row in query(hub, "SELECT summary FROM alerts")]
    assert all("tried to reach an adult site; it was blocked" in text for text in texts), texts
