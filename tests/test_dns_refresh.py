"""URL lists refreshed by the running server when due, from a real HTTP server on 127.0.0.1: a
good copy is served at once, a bad one keeps the old list and shows in the logs and metrics.
Under the installation's hash seed the refresh runs in a child process (agent/dns/prebuild.py)
and the server only loads its compiled index; without it, in a worker thread of the server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.dns.config import load_config
from agent.filter.hashseed import ENV, installation_seed, pinned
from tests.dns_support import Clock, FakeUpstream, ask, free_dns_port, running_dns, write_config
from tests.services import free_port, stop_process
from tests.test_dns_lists_refresh import ListServer
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
PUPIL = "127.0.1.5"

STAFF = "127.0.2.5"
HOUR = 3600.0


@pytest.fixture
def lists_server() -> Iterator[ListServer]:
    server = ListServer()
    server.served.body = b"0.0.0.0 first.example\n0.0.0.0 also.example\n0.0.0.0 more.example\n"
    try:
        yield server
    finally:
        server.close()


def _address(port: int, name: str, source: str = STAFF) -> str:
    reply = ask(port, name, "A", source)
    return str(reply.rr[0].rdata) if reply.rr else "-"


def _config(tmp_path: Path, upstream: FakeUpstream, remote: str, other: str = "") -> Path:
    """The test config plus a URL list "remote" (refresh_h = 1) and, if given, a URL list
    "other" (refresh_h = 24), both blocked for staff."""
    extra = f'\n[[lists]]\ncategory = "remote"\nsource = "{remote}"\nrefresh_h = 1\n'
    block = '"adult", "remote"'
    if other:
        extra += f'\n[[lists]]\ncategory = "other"\nsource = "{other}"\n'
        block += ', "other"'
    path = write_config(tmp_path, [upstream.address], free_dns_port())
    text = path.read_text()
    # The lists must come before [groups] in the TOML.
    text = text.replace("[groups.pupils]", extra + "\n[groups.pupils]", 1)
    text = text.replace('block = ["adult"]', f"block = [{block}]")
    path.write_text(text)
    return path


def test_url_list_refreshes_when_due_and_bad_copy_keeps_old(
    tmp_path: Path, lists_server: ListServer, caplog: pytest.LogCaptureFixture
) -> None:
    # This process does not hash with the installation's seed, so no child can build an
    # index it could load: the refresh falls back to a worker thread of the server.
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, lists_server.url)
        assert not pinned(tmp_path / "cache")
        list_clock = Clock(time.time())
        with running_dns(path, list_clock=list_clock, refresh_check_s=0.05) as dns:
            metrics = dns.service.metrics
            assert metrics is not None
            assert _address(dns.port, "first.example") == "0.0.0.0"
            assert _address(dns.port, "new.example") == "192.0.2.1"
            fetched = len(lists_server.served.requests)
            # Not due yet: nothing is fetched. Proof by a later event: the refresh loop reads
            # the list clock once per check, so two more reads mean a whole check (and any
            # fetch it made) has finished since; the server counted no request meanwhile.
            checks = list_clock.reads
            wait_until(lambda: list_clock.reads >= checks + 2, what="a refresh check not due")
            assert len(lists_server.served.requests) == fetched
            # Due: the new copy is fetched (once) and served.
            lists_server.served.body += b"0.0.0.0 new.example\n"
            list_clock.now += HOUR + 1
            wait_until(lambda: _address(dns.port, "new.example") == "0.0.0.0", what="the new list")
            assert len(lists_server.served.requests) == fetched + 1
            assert metrics.value("hedgerow_dns_lists_with_problems") == 0
            # A broken refresh (server error) keeps the old list, logged and counted.
            lists_server.served.status = 500
            with caplog.at_level(logging.INFO, logger="agent.filter.lists.refresh"):
                list_clock.now += HOUR + 1
                wait_until(
                    lambda: metrics.value("hedgerow_dns_lists_with_problems") == 1, what="problem"
                )
            assert any("still serving the last good copy" in r.message for r in caplog.records)
            assert not any("compiled index" in r.message for r in caplog.records)
            assert _address(dns.port, "new.example") == "0.0.0.0"
            assert _address(dns.port, "first.example") == "0.0.0.0"
            # A copy that shrank below half is refused too; a good one clears the problem.
            lists_server.served.status = 200
            lists_server.served.body = b"0.0.0.0 first.example\n"
            list_clock.now += HOUR + 1
            wait_until(
                lambda: len(lists_server.served.requests) > fetched + 2, what="another fetch"
            )
            assert _address(dns.port, "new.example") == "0.0.0.0"
            lists_server.served.body = b"0.0.0.0 first.example\n0.0.0.0 more.example\n" * 1
            lists_server.served.body += b"0.0.0.0 other.example\n0.0.0.0 fourth.example\n"
            list_clock.now += HOUR + 1
            wait_until(
                lambda: _address(dns.port, "new.example") == "192.0.2.1", what="the good copy"
            )
            assert metrics.value("hedgerow_dns_lists_with_problems") == 0


class _Log:
    """The stderr lines of a process, collected by a thread; wait() for one to appear."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()

    def wait(self, needle: str, start: int = 0) -> int:
        """The index of the first line from `start` holding needle; fails showing the log if
        none comes (a generous bound, no timing asserted)."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(needle in line for line in self.lines[start:]), timeout=60
            )
            assert found, f"no {needle!r} in:\n{''.join(self.lines)}"
            return next(i for i in range(start, len(self.lines)) if needle in self.lines[i])

    def since(self, start: int) -> str:
        with self._changed:
            return "".join(self.lines[start:])


def _problems(port: int) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("hedgerow_dns_lists_with_problems "):
                return float(line.split()[1])
    raise AssertionError("no hedgerow_dns_lists_with_problems in /metrics")


def _move(clock: Path, now: float) -> None:
    tmp = clock.with_suffix(".tmp")
    tmp.write_text(repr(now))
    os.replace(tmp, clock)


def test_a_due_refresh_runs_in_a_child_and_the_server_only_loads_its_index(
    tmp_path: Path, lists_server: ListServer
) -> None:
    # The server runs in a process of its own under the installation's seed (tests/dns_pinned.py)
    # with a list clock this test moves. A local list edited meanwhile and a URL list not due
    # stay as they were: a refresh takes only the due lists.
    other = ListServer()
    other.served.body = b"0.0.0.0 other.example\n"
    metrics = free_port()
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, lists_server.url, other.url)
        text = path.read_text().replace(
            "[server]\n", f'[server]\nmetrics = "127.0.0.1:{metrics}"\n'
        )
        path.write_text(text)
        seed = installation_seed(tmp_path / "cache")
        assert seed is not None
        clock, now = tmp_path / "clock", time.time()
        _move(clock, now)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.dns_pinned", str(path), str(clock)],
            cwd=REPO,
            env={**os.environ, ENV: str(seed)},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            log = _Log(proc)
            start = log.wait("ready")
            port = load_config(path).server.listen[0].port
            assert _address(port, "first.example") == "0.0.0.0"
            assert _address(port, "new.example") == "192.0.2.1"
            assert _address(port, "other.example") == "0.0.0.0"
            with open(tmp_path / "lists" / "gambling.txt", "a") as handle:
                handle.write("local-new.example\n")  # refresh_h = 24: not due
            asked = len(other.served.requests)
            # Due: the child fetches and builds, the server loads what it wrote.
            lists_server.served.body += b"0.0.0.0 new.example\n"
            now += HOUR + 1
            _move(clock, now)
            start = log.wait("lists refreshed: ", start) + 1
            assert _address(port, "new.example") == "0.0.0.0"
            assert _address(port, "first.example") == "0.0.0.0"
            assert _address(port, "other.example") == "0.0.0.0"
            assert _address(port, "local-new.example", PUPIL) == "192.0.2.1"
            assert _address(port, "casino.example", PUPIL) == "0.0.0.0"
            assert len(other.served.requests) == asked
            assert _problems(metrics) == 0
            # A server error keeps the old list; the child's verdict reaches the metric.
            lists_server.served.status = 500
            now += HOUR + 1
            _move(clock, now)
            start = log.wait("still serving the last good copy", start) + 1
            assert "HTTP 500" in log.lines[start - 1]
            assert _problems(metrics) == 1
            assert _address(port, "new.example") == "0.0.0.0"
            # So does a copy that shrank below half.
            lists_server.served.status = 200
            lists_server.served.body = b"0.0.0.0 first.example\n"
            now += HOUR + 1
            _move(clock, now)
            start = log.wait("still serving the last good copy", start) + 1
            assert "shrank" in log.lines[start - 1]
            assert _problems(metrics) == 1
            assert _address(port, "new.example") == "0.0.0.0"
            # A good copy is served and clears the problem.
            lists_server.served.body = b"0.0.0.0 first.example\n0.0.0.0 more.example\n"
            lists_server.served.body += b"0.0.0.0 other.example\n0.0.0.0 fourth.example\n"
            now += HOUR + 1
            _move(clock, now)
            log.wait("lists refreshed: ", start)
            assert _address(port, "new.example") == "192.0.2.1"
            assert _problems(metrics) == 0
            assert len(other.served.requests) == asked
            # Every refresh went through a child; the server never parsed a list after start.
            text = log.since(0)
            assert text.count("lists refreshed by a child process") == 4, text
            assert text.count("refreshed lists loaded from the compiled index") == 2, text
            assert "in this process" not in text and "parsing here" not in text, text
            assert "lists reloaded" not in text, text
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # a clean stop
            try:
                proc.wait(30)
            finally:
                stop_process(proc)
                other.close()
                if proc.stderr is not None:
                    proc.stderr.close()
