"""sd_notify on a real AF_UNIX datagram socket: the client (common/sdnotify.py) and the three
real daemons. Each daemon, started with NOTIFY_SOCKET and a small WATCHDOG_USEC, says READY=1,
pings WATCHDOG=1 periodically, stops pinging while it is stalled (SIGSTOP: the process, and
with it the loop that does the work, cannot run), pings again on SIGCONT, and says STOPPING=1
on SIGTERM. A loop blocked by a callback stops pinging too (the in-process test)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.sdnotify import Notifier, Pinger, ping_forever, ready_then_ping
from hub.config import HubConfig
from hub.store import Database
from tests.dns_support import FakeUpstream, free_dns_port, write_config
from tests.hub_ingest_fixtures import enrol, make_hub, publisher, report_count
from tests.notify_socket import NotifySocket, notify_socket
from tests.services import Mosquitto, stop_process
from tests.waiting import wait_until

BIN = Path(sys.executable).parent


# -- the client --------------------------------------------------------------------------


def test_no_notify_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.watchdog() is False
    assert notifier.watchdog_period is None


def test_ready_status_stopping_reach_a_path_socket(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": sock.address})
        assert notifier.ready("serving 3 lists")
        assert notifier.status("reloading")
        assert notifier.stopping()
        wait_until(lambda: len(sock.received()) == 3, timeout=5, what="three datagrams")
        assert sock.received() == [
            "READY=1\nSTATUS=serving 3 lists",
            "STATUS=reloading",
            "STOPPING=1",
        ]


def test_abstract_namespace_address() -> None:
    name = f"hedgerow-test-{os.getpid()}-{time.monotonic_ns()}"
    with notify_socket(abstract=name) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.address == b"\0" + name.encode()
        assert notifier.watchdog()
        wait_until(lambda: sock.received() == ["WATCHDOG=1"], timeout=5, what="the ping")


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled and notifier.ready() is False


def test_watchdog_period_is_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_period == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_period == 1.0
    # WATCHDOG_PID of another process (we are its child): not ours to ping.
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_period is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_period is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_period is None
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False


def test_ping_forever_stops_while_its_loop_is_blocked(tmp_path: Path) -> None:
    """A real event loop; a callback that blocks it (as a wedged handler would): no pings
    while it blocks, pings again after."""
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": sock.address, "WATCHDOG_USEC": "100000"}  # ping every 50 ms

        async def scenario() -> tuple[int, int]:
            notifier = Notifier(env)
            task = asyncio.ensure_future(ready_then_ping(notifier, "up"))
            await asyncio.sleep(0.5)
            sock.drain()  # the reader has what was sent while we slept
            before = sock.count("WATCHDOG=1")
            time.sleep(1.0)  # blocks the loop, on purpose: nothing else runs on it meanwhile
            sock.drain()  # everything sent before the block has been read
            during = sock.count("WATCHDOG=1") - before
            await asyncio.sleep(0.5)
            task.cancel()
            return before, during

        before, during = asyncio.run(scenario())
        assert sock.received()[0] == "READY=1\nSTATUS=up"
        assert before >= 3
        assert during <= 1  # at most one that the loop had queued just as the block began
        wait_until(lambda: sock.count("WATCHDOG=1") >= before + 3, timeout=5, what="pings again")


def test_ping_forever_returns_without_a_watchdog(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as sock:
        asyncio.run(asyncio.wait_for(ping_forever(Notifier({"NOTIFY_SOCKET": sock.address})), 5))
        assert sock.received() == []


def test_pinger_pings_once_per_period(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as sock:
        pinger = Pinger(Notifier({"NOTIFY_SOCKET": sock.address, "WATCHDOG_USEC": "2000000"}), 0.0)
        for now in (0.0, 0.5, 0.9, 1.0, 1.5, 2.1):  # a fake clock: pings at 0, 1.0 and 2.1
            pinger.due(now)
        wait_until(lambda: sock.count("WATCHDOG=1") == 3, timeout=5, what="three pings")


# -- the daemons ---------------------------------------------------------------------------


@contextmanager
def notified(
    sock: NotifySocket, args: list[str], log: Path, watchdog_usec: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon started as systemd would start a Type=notify unit with WatchdogSec."""
    env = dict(os.environ, NOTIFY_SOCKET=sock.address, WATCHDOG_USEC=str(watchdog_usec))
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case an assert left it stopped
        stop_process(proc)


def watchdog_lifecycle(
    sock: NotifySocket, proc: subprocess.Popen[bytes], log: Path, period_s: float
) -> None:
    """READY, periodic pings, none while stopped, pings again, STOPPING on SIGTERM, exit 0."""

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:]

    try:
        wait_until(lambda: sock.count("READY=1") == 1, timeout=60, what="READY=1")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the daemon's log ends: {tail()}") from exc
    assert any(m.startswith("READY=1\nSTATUS=") for m in sock.received()), sock.received()
    seen = sock.count("WATCHDOG=1")
    wait_until(lambda: sock.count("WATCHDOG=1") >= seen + 3, timeout=30, what="periodic pings")
    proc.send_signal(signal.SIGSTOP)  # the stall: the daemon's loop cannot run
    try:
        sock.drain()
        stalled = sock.count("WATCHDOG=1")
        time.sleep(period_s * 4)  # four periods in which a running loop would have pinged
        assert sock.count("WATCHDOG=1") == stalled, "pinged while stopped"
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_until(lambda: sock.count("WATCHDOG=1") >= stalled + 2, timeout=30, what="pings again")
    assert sock.count("STOPPING=1") == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, tail()
    assert sock.count("STOPPING=1") == 1, sock.received()[-5:]
    assert sock.count("READY=1") == 1


def test_hedgerow_dns_serve_speaks_sd_notify(tmp_path: Path) -> None:
    with FakeUpstream() as upstream, notify_socket(tmp_path) as sock:
        config = write_config(tmp_path, [upstream.address], free_dns_port())
        log = tmp_path / "dns.log"
        args = [f"{BIN}/hedgerow-dns", "serve", "--config", str(config)]
        with notified(sock, args, log, watchdog_usec=400_000) as proc:  # ping every 0.2 s
            watchdog_lifecycle(sock, proc, log, period_s=0.2)


def test_hedgerow_hub_serve_speaks_sd_notify(tmp_path: Path, broker: Mosquitto) -> None:
    hub: HubConfig = make_hub(tmp_path, broker.url, None)
    with notify_socket(tmp_path) as sock:
        log = tmp_path / "hub.log"
        args = [f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path)]
        # The hub's main loop wakes every 0.5 s: a 1 s period (WatchdogSec=2s).
        with notified(sock, args, log, watchdog_usec=2_000_000) as proc:
            watchdog_lifecycle(sock, proc, log, period_s=1.0)
        assert any("STATUS=serving site" in m for m in sock.received())


def test_hedgerow_agent_run_speaks_sd_notify(tmp_path: Path, broker: Mosquitto) -> None:
    from hub.cli import main as hub_main

    hub = make_hub(tmp_path, broker.url, None)
    bundle = tmp_path / "lt-1.bundle"
    args = ["enroll", "bundle", "--config", str(hub.path), "--device", "lt-1"]
    args += ["--class", "pupil-laptop", "--broker", broker.url, "--out", str(bundle)]
    assert hub_main(args) == 0
    with FakeUpstream() as offsite, notify_socket(tmp_path) as sock:
        config = tmp_path / "agent.toml"
        config.write_text(
            f"""
[agent]
state_dir = "{tmp_path / "agent"}"
control_socket = "{tmp_path / "agent.sock"}"
[hub]
url = "{broker.url}"
[site]
beacon_servers = ["127.0.0.1:{free_dns_port()}"]
check_interval_s = 2
[filter]
listen = "127.0.0.1:{free_dns_port()}"
offsite_upstreams = ["{offsite.address}"]
manage_system_resolver = false
timeout_ms = 300
[sniffer]
enabled = false
"""
        )
        enrol = [
            f"{BIN}/hedgerow-agent",
            "enroll",
            "--config",
            str(config),
            "--bundle",
            str(bundle),
        ]
        subprocess.run(enrol, check=True, timeout=60)
        log = tmp_path / "agent.log"
        args = [f"{BIN}/hedgerow-agent", "run", "--config", str(config)]
        with notified(sock, args, log, watchdog_usec=400_000) as proc:
            watchdog_lifecycle(sock, proc, log, period_s=0.2)


def test_a_hung_ingest_loop_stops_the_hubs_pings(
    tmp_path: Path, broker: Mosquitto, pg_url: str
) -> None:
    """The hub's main loop is fine but its ingest thread hangs: a commit waits on a table lock
    another PostgreSQL session holds (no timeout: a real hang). After [ingest] stall_s the
    pings stop, with one log line saying why; when the lock goes, ingest finishes the report
    and the pings come back."""
    hub: HubConfig = make_hub(tmp_path, broker.url, pg_url)
    with open(hub.path, "a", encoding="utf-8") as handle:
        handle.write("\n[ingest]\nworkers = 0\nstall_s = 5\n")
    device = enrol(hub, "lt-hang")
    with notify_socket(tmp_path) as sock:
        log = tmp_path / "hub.log"
        args = [f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path)]
        with notified(sock, args, log, watchdog_usec=2_000_000) as proc:  # ping every 1 s
            wait_until(lambda: sock.count("READY=1") == 1, timeout=60, what="READY=1")
            blocker = Database(pg_url)
            try:
                with blocker.transaction():
                    blocker.execute("LOCK TABLE reports IN ACCESS EXCLUSIVE MODE")
                    with publisher(broker.url) as pub:
                        pub.send(device.topic(), device.envelope())
                    wait_until(
                        lambda: "ingest has not gone round" in log.read_text(),
                        timeout=60,
                        what="the stall to be noticed",
                    )
                    sock.drain()
                    stalled = sock.count("WATCHDOG=1")
                    time.sleep(4)  # four periods in which a working hub would have pinged
                    assert sock.count("WATCHDOG=1") == stalled, "pinged while ingest hung"
                    assert proc.poll() is None  # not exited: systemd's watchdog decides
            finally:
                blocker.close()  # the lock goes with the transaction
            wait_until(lambda: report_count(hub) == 1, timeout=30, what="the report stored")
            wait_until(
                lambda: sock.count("WATCHDOG=1") >= stalled + 2, timeout=30, what="pings again"
            )
            assert log.read_text().count("ingest has not gone round") == 1
