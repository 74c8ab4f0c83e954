"""URL lists refreshed by the running server when due (ListRefresher, in an executor), from a
real HTTP server on 127.0.0.1: a good copy is served at once, a bad one keeps the old list and
shows in the logs and metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_support import Clock, FakeUpstream, ask, free_dns_port, running_dns, write_config
from tests.test_dns_lists_refresh import ListServer

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


def _address(port: int, name: str) -> str:
    reply = ask(port, name, "A", STAFF)
    return str(reply.rr[0].rdata) if reply.rr else "-"


def _until(condition: object, what: str) -> None:
    # Waiting for the server's own refresh loop (no timing asserted: a generous bound only).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_url_list_refreshes_when_due_and_bad_copy_keeps_old(
    tmp_path: Path, lists_server: ListServer, caplog: pytest.LogCaptureFixture
) -> None:
    extra = f'\n[[lists]]\ncategory = "remote"\nsource = "{lists_server.url}"\nrefresh_h = 1\n'
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port())
        text = path.read_text()
        # The list must come before [groups] in the TOML; staff block it.
        text = text.replace("[groups.pupils]", extra + "\n[groups.pupils]", 1)
        text = text.replace('block = ["adult"]', 'block = ["adult", "remote"]')
        path.write_text(text)
        list_clock = Clock(time.time())
        with running_dns(path, list_clock=list_clock, refresh_check_s=0.05) as dns:
            metrics = dns.service.metrics
            assert metrics is not None
            assert _address(dns.port, "first.example") == "0.0.0.0"
            assert _address(dns.port, "new.example") == "192.0.2.1"
            fetched = len(lists_server.served.requests)
            # Not due yet: nothing is fetched.
            time.sleep(0.3)
            assert len(lists_server.served.requests) == fetched
            # Due: the new copy is fetched and served.
            lists_server.served.body += b"0.0.0.0 new.example\n"
            list_clock.now += HOUR + 1
            _until(lambda: _address(dns.port, "new.example") == "0.0.0.0", "the new list")
            assert metrics.value("hedgerow_dns_lists_with_problems") == 0
            # A broken refresh (server error) keeps the old list, logged and counted.
            lists_server.served.status = 500
            with caplog.at_level(logging.WARNING, logger="agent.dns.lists.refresh"):
                list_clock.now += HOUR + 1
                _until(lambda: metrics.value("hedgerow_dns_lists_with_problems") == 1, "problem")
            assert any("still serving the last good copy" in r.message for r in caplog.records)
            assert _address(dns.port, "new.example") == "0.0.0.0"
            assert _address(dns.port, "first.example") == "0.0.0.0"
            # A copy that shrank below half is refused too; a good one clears the problem.
            lists_server.served.status = 200
            lists_server.served.body = b"0.0.0.0 first.example\n"
            list_clock.now += HOUR + 1
            _until(lambda: len(lists_server.served.requests) > fetched + 2, "another fetch")
            assert _address(dns.port, "new.example") == "0.0.0.0"
            lists_server.served.body = b"0.0.0.0 first.example\n0.0.0.0 more.example\n" * 1
            lists_server.served.body += b"0.0.0.0 other.example\n0.0.0.0 fourth.example\n"
            list_clock.now += HOUR + 1
            _until(lambda: _address(dns.port, "new.example") == "192.0.2.1", "the good copy")
            assert metrics.value("hedgerow_dns_lists_with_problems") == 0
