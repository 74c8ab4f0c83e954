"""List refresh safety against a real HTTP server on 127.0.0.1, and the on-disk cache."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.filter.lists import ListError, ListRefresher, ListSpec, check_lists, explain, load_lists
from agent.filter.lists.copies import slot
from agent.filter.lists.handoff import handoff_of, job_of, run_job
from agent.filter.lists.snapshot import FILE

GOOD = "".join(f"site{i}.example\n" for i in range(100))


@dataclass
class Served:
    """What the test server answers for its one path."""

    body: bytes = GOOD.encode()
    status: int = 200
    claim_length: int | None = None  # a Content-Length larger than the body: truncation
    etag: str | None = None
    location: str | None = None
    requests: list[str] = field(default_factory=list)


class ListServer:
    """A real ThreadingHTTPServer on a free loopback port serving `served`."""

    def __init__(self) -> None:
        self.served = Served()
        served = self.served

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests.append(self.headers.get("If-None-Match") or "")
                if served.etag and self.headers.get("If-None-Match") == served.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(served.status)
                if served.location:
                    self.send_header("Location", served.location)
                if served.etag:
                    self.send_header("ETag", served.etag)
                length = served.claim_length or len(served.body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(served.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/list.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,))
        self.thread.start()
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[ListServer]:
    s = ListServer()
    try:
        yield s
    finally:
        s.close()


class Clock:
    """A settable clock for due(): no wall-clock timing in tests."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_url_is_fetched_cached_and_served_after_restart_offline(
    tmp_path: Path, server: ListServer
) -> None:
    spec = ListSpec("ads", server.url)
    index, stats = ListRefresher([spec], tmp_path / "cache").load()
    assert index.lookup("www.site7.example") == 1
    assert stats[0].entries == 100
    server.close()
    # A restart with the server gone still serves the cached copy.
    again = ListRefresher([spec], tmp_path / "cache")
    index, _ = again.load()
    assert index.lookup("site99.example") == 1
    assert again.status()[0].serving_from == "cache"
    assert check_lists([spec], tmp_path / "cache")[0].entries == 100
    assert [m.line for m in explain("site3.example", [spec], tmp_path / "cache")] == [4]
    # With neither network nor cache, the error names the URL.
    with pytest.raises(ListError, match=r"127\.0\.0\.1"):
        ListRefresher([spec], tmp_path / "other").load()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (Served(body=b""), "is empty"),
        (Served(body=b"# nothing left\n"), "no usable entries"),
        (Served(body=GOOD[:300].encode(), claim_length=len(GOOD)), "truncated"),
        (Served(body=GOOD[:400].encode()), "shrank from 100 to"),
        (Served(body=b"<html>\n<p>captive portal</p>\n</html>\nx.example\n"), "unparseable"),
        (Served(status=500), "HTTP 500"),
        (Served(status=302, location="http://192.0.2.1/list.txt"), "redirected"),
        (Served(body=b"\x00\x01binary"), "binary"),
    ],
)
def test_bad_refresh_keeps_old_list(
    tmp_path: Path, server: ListServer, change: Served, problem: str
) -> None:
    spec = ListSpec("ads", server.url)
    refresher = ListRefresher([spec], tmp_path)
    first, _ = refresher.load()
    server.served.body = change.body
    server.served.status = change.status
    server.served.claim_length = change.claim_length
    server.served.location = change.location
    assert refresher.refresh([spec]) is first
    assert refresher.index is first
    assert first.lookup("site42.example") == 1
    (status,) = refresher.status()
    assert status.problem is not None and problem in status.problem
    assert status.entries == 100
    # The cached copy is still the last good one: a restart serves all 100 names.
    assert ListRefresher([spec], tmp_path).load()[1][0].entries == 100
    assert not list(tmp_path.glob("*.part"))


def test_good_refresh_swaps_index_and_clears_problem(tmp_path: Path, server: ListServer) -> None:
    spec = ListSpec("ads", server.url)
    refresher = ListRefresher([spec], tmp_path)
    first, _ = refresher.load()
    server.served.body = b""
    refresher.refresh([spec])
    assert refresher.status()[0].problem
    server.served.body = (GOOD + "new.example\n").encode()
    second = refresher.refresh([spec])
    assert second is not first
    assert second.lookup("new.example") == 1 and first.lookup("new.example") == 0
    assert refresher.status()[0].problem is None
    assert refresher.stats()[0].entries == 101


def test_not_modified_keeps_index_and_due_follows_refresh_h(
    tmp_path: Path, server: ListServer
) -> None:
    server.served.etag = '"v1"'
    clock = Clock()
    spec = ListSpec("ads", server.url, refresh_h=2)
    refresher = ListRefresher([spec], tmp_path, clock=clock)
    first, _ = refresher.load()
    assert refresher.due() == []
    clock.now += 2 * 3600
    assert refresher.due() == [spec]
    assert refresher.refresh() is first  # 304: nothing rebuilt
    assert server.served.requests[-1] == '"v1"'
    assert refresher.due() == []
    assert refresher.status()[0].checked_at == clock.now


def test_path_source_bad_edit_keeps_old_and_restart_uses_cache(tmp_path: Path) -> None:
    path = tmp_path / "local.txt"
    path.write_text(GOOD)
    spec = ListSpec("ads", str(path))
    cache = tmp_path / "cache"
    refresher = ListRefresher([spec], cache)
    first, _ = refresher.load()
    path.write_text("")
    assert refresher.refresh([spec]) is first
    assert "is empty" in (refresher.status()[0].problem or "")
    # A restart with the broken file serves the cached copy and says so.
    again = ListRefresher([spec], cache)
    index, _ = again.load()
    assert index.lookup("site5.example") == 1
    (status,) = again.status()
    assert status.serving_from == "cache" and "is empty" in (status.problem or "")
    # A deliberate small edit is accepted at restart (the admin's own file).
    path.write_text("only.example\n")
    index, _ = ListRefresher([spec], cache).load()
    assert index.lookup("only.example") == 1 and index.lookup("site5.example") == 0


def test_path_refresh_picks_up_changes_and_unchanged_is_cheap(tmp_path: Path) -> None:
    path = tmp_path / "local.txt"
    path.write_text(GOOD)
    other = tmp_path / "other.txt"
    other.write_text("other.example\n")
    specs = [ListSpec("ads", str(path)), ListSpec("misc", str(other))]
    refresher = ListRefresher(specs, tmp_path / "cache")
    first, _ = refresher.load()
    assert refresher.refresh(specs) is first  # nothing changed on disk
    path.write_text(GOOD + "added.example\n")
    second = refresher.refresh(specs)
    assert second.lookup("added.example") == 1
    assert second.lookup("other.example") == 2  # rebuilt from the other list's cached copy


def test_load_lists_with_cache_dir_uses_refresher(tmp_path: Path, server: ListServer) -> None:
    index, stats = load_lists([ListSpec("ads", server.url)], tmp_path)
    assert index.lookup("site1.example") == 1 and stats[0].format == "plain"
    index, _ = load_lists([ListSpec("ads", server.url)], None)
    assert index.lookup("site1.example") == 1


def test_a_handed_off_refresh_fetches_only_due_lists_and_the_server_adopts_it(
    tmp_path: Path, server: ListServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The child's half (run_job) runs here, in-process: its compiled index then hashes as this
    # process does, so the server's half (adopt) can load it. tests/test_dns_refresh.py runs
    # the real child under a real server.
    other = ListServer()
    other.served.body = b"other.example\n"
    try:
        clock = Clock()
        due, later = ListSpec("ads", server.url, refresh_h=1), ListSpec("misc", other.url)
        serving = ListRefresher([due, later], tmp_path, clock=clock)
        first, _ = serving.load()
        clock.now += 3600
        assert serving.due() == [due]
        asked = len(other.served.requests)
        server.served.body = (GOOD + "new.example\n").encode()
        handed = handoff_of(run_job(job_of(serving, serving.due(), clock.now)))
        assert handed.rebuilt and len(other.served.requests) == asked  # not due: not fetched
        assert serving.index is first  # nothing changes in the server until it adopts
        with caplog.at_level(logging.INFO, logger="agent.filter.lists"):
            second = serving.adopt(handed.status, handed.stats, handed.rebuilt)
        assert "refreshed lists loaded from the compiled index" in caplog.text
        assert "lists reloaded" not in caplog.text  # loaded, not parsed
        assert second.lookup("new.example") == 1 and second.lookup("site1.example") == 1
        assert second.lookup("other.example") == 2
        assert serving.index is second
        assert serving.stats()[0].entries == 101
        assert [s.checked_at for s in serving.status()] == [clock.now, clock.now - 3600]
        # A bad copy keeps the old list; the child's verdict shows in the server's status.
        server.served.body = b""
        clock.now += 3600
        handed = handoff_of(run_job(job_of(serving, serving.due(), clock.now)))
        assert not handed.rebuilt
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="agent.filter.lists"):
            assert serving.adopt(handed.status, handed.stats, handed.rebuilt) is second
        assert "still serving the last good copy" in caplog.text
        status = serving.status()[0]
        assert status.problem is not None and "is empty" in status.problem
        assert status.entries == 101 and status.serving_from == "source"
        assert slot(tmp_path, server.url).read_note() is not None
        assert ListRefresher([due, later], tmp_path).load()[1][0].entries == 101
    finally:
        other.close()


def test_rebuild_serves_copies_that_another_refresher_took(tmp_path: Path) -> None:
    # A refresh child that dies after taking a new copy into the cache leaves the server's
    # index behind it; the server's fallback refresh(rebuild=True) catches up.
    path = tmp_path / "local.txt"
    path.write_text(GOOD)
    spec = ListSpec("ads", str(path))
    cache = tmp_path / "cache"
    serving = ListRefresher([spec], cache)
    first, _ = serving.load()
    path.write_text(GOOD + "added.example\n")
    ListRefresher([spec], cache).refresh([spec])  # the "child": takes the copy, then is gone
    assert serving.refresh([spec]) is first  # the copy looks current: nothing to do
    rebuilt = serving.refresh([spec], rebuild=True)
    assert rebuilt.lookup("added.example") == 1
    assert serving.stats()[0].entries == 101


def test_adopt_parses_here_if_the_childs_compiled_index_is_gone(
    tmp_path: Path, server: ListServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    spec = ListSpec("ads", server.url, refresh_h=1)
    serving = ListRefresher([spec], tmp_path, clock=clock)
    serving.load()
    clock.now += 3600
    server.served.body = (GOOD + "new.example\n").encode()
    handed = handoff_of(run_job(job_of(serving, serving.due(), clock.now)))
    (tmp_path / FILE).unlink()  # e.g. the child could not write it (disk full)
    with caplog.at_level(logging.WARNING, logger="agent.filter.lists"):
        index = serving.adopt(handed.status, handed.stats, handed.rebuilt)
    assert "parsing here" in caplog.text
    assert index.lookup("new.example") == 1 and serving.stats()[0].entries == 101
