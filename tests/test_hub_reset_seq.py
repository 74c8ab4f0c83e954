"""`hedgerow-hub devices reset-seq`: a device whose spool and sequence file were wiped counts
from seq 1 again; the operator resets its replay window and its reports are stored again,
by a `serve` that is running, with its old reports kept (their seqs moved below zero)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.wire import Header, Kind, OpenError, SuiteId
from common.wire.envelope import split
from hub.cli import main
from hub.config import HubConfig
from hub.errors import StoreError
from hub.model import DeviceInfo
from hub.store import Database
from hub.store.devices import add_device
from hub.store.replay_guard import StoreReplayGuard, reset_window
from hub.store.reports import NewReport, insert_reports
from tests.hub_ingest_fixtures import (
    ROOT,
    SITE,
    enrol,
    make_hub,
    publisher,
    query,
    serving,
    summary,
)
from tests.services import Mosquitto
from tests.waiting import wait_until


def stored(seq: int, text: str) -> NewReport:
    """A report row of lt-1 for seq with the digest of text."""
    digest = hashlib.sha256(text.encode()).digest()
    return NewReport(SITE, "lt-1", seq, "summary", digest, 0, 0, None, None, "{}")


def header(seq: int) -> Header:
    """A header of lt-1 for seq."""
    return Header(Kind.SUMMARY, SuiteId.X25519, SITE, "lt-1", seq, 0, b"k" * 8)


def seqs(db: Database) -> list[int]:
    """lt-1's stored seqs, in the order the reports were stored."""
    return [int(r[0]) for r in db.execute("SELECT seq FROM reports ORDER BY id")]


def test_reset_moves_stored_seqs_out_of_the_way_and_running_guards_forget(db: Database) -> None:
    add_device(db, DeviceInfo(SITE, "lt-1", "pupil-laptop", None, bytes(32), enrolled_ms=0))
    insert_reports(db, [stored(s, f"a{s}") for s in (1, 2, 3)])
    guard = StoreReplayGuard(db)
    guard.load([(SITE, "lt-1")])
    assert guard.poll_resets() == []
    with pytest.raises(OpenError, match="already used"):
        guard.check(header(1), hashlib.sha256(b"wiped").digest())  # a new seq 1: a replay
    done = reset_window(db, SITE, "lt-1", 1_000)
    assert (done.highest, done.moved, done.shift) == (3, 3, 3)
    assert seqs(db) == [-2, -1, 0]
    assert guard.poll_resets() == [(SITE, "lt-1")]  # what a running hub reads per batch
    assert guard.poll_resets() == []
    assert guard.check(header(1), hashlib.sha256(b"wiped").digest()) is False  # new again
    # A second reset moves the new numbering below the first one's.
    insert_reports(db, [stored(s, f"b{s}") for s in (1, 2)])
    done = reset_window(db, SITE, "lt-1", 2_000)
    assert (done.highest, done.moved, done.shift) == (2, 2, 5)
    assert seqs(db) == [-2, -1, 0, -4, -3]
    rows = db.execute("SELECT highest, shift FROM seq_resets ORDER BY id")
    assert rows == [(3, 3), (2, 5)]
    assert db.execute("SELECT last_seq FROM devices")[0][0] == 0
    with pytest.raises(StoreError, match="no device"):
        reset_window(db, SITE, "lt-nobody", 3_000)


def cli(config_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """hedgerow-hub as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *argv, "--config", str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["devices", "reset-seq", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "SITE" in text.upper() and "seq 1" in text and "--config" in text
    with pytest.raises(SystemExit):
        main(["devices", "--help"])
    assert "reset-seq" in capsys.readouterr().out


def refused(config: HubConfig, device: str) -> dict[str, int]:
    """A device's refusals by reason."""
    rows = query(
        config,
        "SELECT reason, SUM(count) FROM rejection_counts WHERE device = ? GROUP BY reason",
        (device,),
    )
    return {str(r[0]): int(r[1]) for r in rows}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_wiped_device_is_heard_again_after_reset_seq(
    tmp_path: Path, broker: Mosquitto, request: pytest.FixtureRequest, backend: str
) -> None:
    url = None if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    config = make_hub(tmp_path, broker.url, url)
    device = enrol(config, "lt-wiped")

    def stored_seqs() -> list[int]:
        rows = query(config, "SELECT seq FROM reports WHERE device = ? ORDER BY id", ("lt-wiped",))
        return [int(r[0]) for r in rows]

    with serving(config), publisher(broker.url) as pub:
        for _ in range(3):
            pub.send(device.topic(), device.envelope())
        wait_until(lambda: stored_seqs() == [1, 2, 3], what="three reports")
        device.seq = 0  # its spool and sequence file wiped: it counts from 1 again
        pub.send(device.topic(), device.envelope(summary(blocked=2)))
        wait_until(lambda: refused(config, "lt-wiped") == {"replay": 1}, what="a replay")
        # Whatever else went wrong meanwhile got the device throttled.
        _, _, ciphertext, _ = split(device.envelope(seq=50))
        to = device.hub_key
        for seq in range(100, 220):
            head = Header(Kind.SUMMARY, to.suite, SITE, "lt-wiped", seq, 1, to.key_id).encode()
            pub.send(device.topic(), head + ciphertext + os.urandom(64), wait=False)
        log = config.path.parent / "serve.log"
        wait_until(lambda: "throttling cape-primary/lt-wiped" in log.read_text(), what="throttle")
        wrong = cli(config.path, "devices", "reset-seq", SITE, "lt-nobody")
        assert wrong.returncode == 1 and "no device cape-primary/lt-nobody" in wrong.stderr
        done = cli(config.path, "devices", "reset-seq", SITE, "lt-wiped")
        assert done.returncode == 0, done.stderr
        assert done.stdout == (
            "cape-primary/lt-wiped: replay window reset; its 3 stored report(s) up to seq 3 now "
            "have seq - 3; its next report may carry any seq from 1\n"
        )
        device.seq = 0
        for _ in range(2):
            pub.send(device.topic(), device.envelope())
        wait_until(lambda: stored_seqs() == [-2, -1, 0, 1, 2], what="the wiped device heard")
    listed = cli(config.path, "devices")
    assert "cape-primary/lt-wiped" in listed.stdout and "last_seq=2" in listed.stdout
