"""The compiled index on disk (agent/filter/lists/snapshot.py) and the installation hash seed: a
warm start serves exactly what a fresh build would, and anything stale, corrupt, foreign or
not private is ignored with a log line and rebuilt from the lists."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.filter.hashseed import ENV, installation_seed, pinned
from agent.filter.lists import CategoryIndex, ListRefresher, ListSpec
from agent.filter.lists.model import StaleIndex
from agent.filter.lists.snapshot import FILE
from tests.dns_support import FakeUpstream, ask, free_dns_port, write_config
from tests.services import stop_process
from tests.test_dns_cli import CLI

REPO = Path(__file__).resolve().parent.parent
LABELS = ["a", "b", "ex", "com", "xn--bcher-kva", "z-9", "_s"]
names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)
RULES = ("||{}^", "||*.{}^", "@@||{}^", "@@||*.{}^")
rule_lists = st.lists(
    st.lists(st.tuples(names, st.sampled_from(RULES)), min_size=1, max_size=20),
    min_size=1,
    max_size=3,
)


def _specs(directory: Path, lists: list[list[tuple[str, str]]]) -> list[ListSpec]:
    specs = []
    for i, rules in enumerate(lists):
        path = directory / f"list{i}.txt"
        # one plain block keeps every list non-empty (a list of only exceptions is refused)
        path.write_text("\n".join(["||anchor.example^", *(r.format(n) for n, r in rules)]) + "\n")
        specs.append(ListSpec(f"cat{i}", str(path), statutory=i == 2))
    return specs


def _load(
    specs: list[ListSpec], cache: Path, caplog: pytest.LogCaptureFixture
) -> tuple[CategoryIndex, bool]:
    """Load with a fresh refresher; True if it was served from the compiled index."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="agent.filter.lists"):
        index, _ = ListRefresher(specs, cache, compiled=True).load()
    return index, "loaded from the compiled index" in caplog.text


@settings(max_examples=40, deadline=None)
@given(lists=rule_lists, queries=st.lists(names, min_size=1, max_size=30))
def test_a_warm_start_answers_exactly_as_a_fresh_build(
    lists: list[list[tuple[str, str]]], queries: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        specs = _specs(Path(tmp), lists)
        fresh, _ = ListRefresher(specs, Path(tmp) / "cache", compiled=True).load()
        warm, stats = ListRefresher(specs, Path(tmp) / "cache", compiled=True).load()
        assert warm is not fresh and len(warm) == len(fresh)
        assert warm.categories == fresh.categories
        assert warm.statutory_mask == fresh.statutory_mask
        for name in [*queries, "anchor.example", "x.anchor.example", "com"]:
            assert warm.lookup(name) == fresh.lookup(name), name
        assert [s.source for s in stats] == [spec.source for spec in specs]


def test_the_compiled_index_is_private_and_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = _specs(tmp_path, [[("casino.example", "||{}^")]])
    _, warm = _load(specs, tmp_path / "cache", caplog)
    assert not warm
    for path in (tmp_path / "cache").iterdir():  # the compiled index, list copies, notes
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    index, warm = _load(specs, tmp_path / "cache", caplog)
    assert warm and index.lookup("www.casino.example") == 1


def test_a_changed_list_is_rebuilt_not_served_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = _specs(tmp_path, [[("casino.example", "||{}^")]])
    _load(specs, tmp_path / "cache", caplog)
    Path(specs[0].source).write_text("||other.example^\n")
    index, warm = _load(specs, tmp_path / "cache", caplog)
    assert not warm
    assert index.lookup("casino.example") == 0 and index.lookup("other.example") == 1
    index, warm = _load(specs, tmp_path / "cache", caplog)  # and the new build is compiled
    assert warm and index.lookup("other.example") == 1


def test_compiled_only_refuses_to_parse_a_changed_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a reload asks of the serving process (agent/dns/prebuild.py): the compiled index
    # or StaleIndex, never a parse of its own.
    specs = _specs(tmp_path, [[("casino.example", "||{}^")]])
    _load(specs, tmp_path / "cache", caplog)
    index, _ = ListRefresher(specs, tmp_path / "cache", compiled=True).load(compiled_only=True)
    assert index.lookup("casino.example") == 1  # category bit 0
    with open(specs[0].source, "a") as handle:
        handle.write("||other.example^\n")
    with pytest.raises(StaleIndex):
        ListRefresher(specs, tmp_path / "cache", compiled=True).load(compiled_only=True)


def test_a_copy_changed_behind_our_back_is_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = _specs(tmp_path, [[("casino.example", "||{}^")]])
    _load(specs, tmp_path / "cache", caplog)
    (copy,) = (tmp_path / "cache").glob("*.list")
    copy.write_text(copy.read_text().replace("casino", "kasino"))
    index, warm = _load(specs, tmp_path / "cache", caplog)
    assert not warm and "has changed" in caplog.text
    assert index.lookup("kasino.example") == 1


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _truncate_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _bad_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:12] + b"[" + data[13:])


def _extra_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 8)


def _group_writable(path: Path) -> None:
    path.chmod(0o620)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_truncate, "truncated"),
        (_truncate_header, "truncated"),
        (_flip_last_byte, "corrupt"),
        (_garbage, "not a compiled index"),
        (_bad_header, "unreadable"),
        (_extra_bytes, "trailing bytes"),
        (_group_writable, "writable by others"),
    ],
)
def test_a_damaged_compiled_index_is_ignored_and_rebuilt(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    why: str,
) -> None:
    specs = _specs(tmp_path, [[("casino.example", "||{}^"), ("ok.casino.example", "@@||{}^")]])
    fresh, _ = _load(specs, tmp_path / "cache", caplog)
    damage(tmp_path / "cache" / FILE)
    index, warm = _load(specs, tmp_path / "cache", caplog)
    assert not warm
    assert "ignoring the compiled index" in caplog.text and why in caplog.text
    for name in ("casino.example", "ok.casino.example", "a.b.casino.example", "bbc.co.uk"):
        assert index.lookup(name) == fresh.lookup(name)
    assert stat.S_IMODE((tmp_path / "cache" / FILE).stat().st_mode) == 0o600  # rewritten


def test_another_set_of_lists_is_foreign(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    one = _specs(tmp_path, [[("casino.example", "||{}^")], [("adult.example", "||{}^")]])
    _load(one, tmp_path / "cache", caplog)
    swapped = [ListSpec("cat1", one[0].source), ListSpec("cat0", one[1].source)]
    index, warm = _load(swapped, tmp_path / "cache", caplog)
    assert not warm and "another set of lists" in caplog.text
    assert index.lookup("casino.example") == index.bit("cat1")


def test_an_index_built_under_another_hash_seed_is_foreign(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = _specs(tmp_path, [[("casino.example", "||{}^")]])
    cache = tmp_path / "cache"
    # A real other process, with a hash seed of its own, writes the compiled index.
    script = (
        "import sys; from agent.filter.lists import ListRefresher, ListSpec; "
        "ListRefresher([ListSpec('cat0', sys.argv[1])], __import__('pathlib').Path(sys.argv[2]),"
        " compiled=True).load()"
    )
    subprocess.run(
        [sys.executable, "-c", script, specs[0].source, str(cache)],
        check=True,
        cwd=REPO,
        env={**os.environ, ENV: "12345"},
        timeout=60,
    )
    assert (cache / FILE).exists()
    index, warm = _load(specs, cache, caplog)
    assert not warm and "another hash seed" in caplog.text
    assert index.lookup("casino.example") == 1


def test_without_the_installation_seed_nothing_is_written(tmp_path: Path) -> None:
    specs = _specs(tmp_path, [[("casino.example", "||{}^")]])
    assert not pinned(tmp_path / "cache")
    ListRefresher(specs, tmp_path / "cache").load()  # compiled=None: only when pinned
    assert not (tmp_path / "cache" / FILE).exists()


def test_the_installation_seed_is_private_and_stable(tmp_path: Path) -> None:
    seed = installation_seed(tmp_path)
    assert seed is not None and 0 < seed < 2**32
    assert stat.S_IMODE((tmp_path / "hashseed").stat().st_mode) == 0o600
    assert installation_seed(tmp_path) == seed
    (tmp_path / "hashseed").chmod(0o644)  # readable by others: no longer a secret
    fresh = installation_seed(tmp_path)
    assert fresh is not None and fresh != seed
    assert stat.S_IMODE((tmp_path / "hashseed").stat().st_mode) == 0o600


def _serve_until_ready(path: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != ENV},
    )
    assert proc.stderr is not None
    seen: list[bytes] = []
    while b"ready" not in (line := proc.stderr.readline()):
        assert line, f"server exited before it was ready: {b''.join(seen)!r}"
        seen.append(line)
    return proc, b"".join(seen).decode()


def test_serve_restarts_from_the_compiled_index(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        for start in ("cold", "warm"):
            proc, log = _serve_until_ready(path)
            try:
                assert ("loaded from the compiled index" in log) == (start == "warm"), log
                blocked = ask(port, "www.casino.example", source="127.0.1.5")
                assert str(blocked.rr[0].rdata) == "0.0.0.0", start
                allowed = ask(port, "lucky.casino.example", source="127.0.1.5")
                assert str(allowed.rr[0].rdata) != "0.0.0.0", start
            finally:
                stop_process(proc)
                assert proc.stderr is not None
                proc.stderr.close()
        assert stat.S_IMODE((tmp_path / "cache" / FILE).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "cache" / "hashseed").stat().st_mode) == 0o600
