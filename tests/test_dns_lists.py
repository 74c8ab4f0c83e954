"""Blocklist formats, normalisation, matching, broken lists, check and explain."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.filter.lists import (
    CategoryIndex,
    ListError,
    ListSpec,
    check_lists,
    explain,
    load_lists,
    normalise,
    suffixes,
)


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def index_of(tmp_path: Path, *lists: tuple[str, str]) -> CategoryIndex:
    specs = [
        ListSpec(category, write(tmp_path, f"list{i}.txt", text))
        for i, (category, text) in enumerate(lists)
    ]
    index, _ = load_lists(specs, None)
    return index


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de.", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("com", "com"),
        ("", None),
        ("a..b", None),
        (".example.com", None),
        ("exa mple.com", None),
        ("1.2.3.4", None),
        ("a" * 64 + ".com", None),
        (("a" * 60 + ".") * 5 + "com", None),
        ("bad\ufffd.com", None),
    ],
)
def test_normalise(raw: str, expected: str | None) -> None:
    assert normalise(raw) == expected


def test_suffixes() -> None:
    assert list(suffixes("a.b.example.com")) == [
        "a.b.example.com",
        "b.example.com",
        "example.com",
        "com",
    ]
    assert list(suffixes("com")) == ["com"]


HOSTS = """\
# a hosts file
127.0.0.1 localhost
::1 localhost ip6-localhost
0.0.0.0 0.0.0.0
0.0.0.0 ads.example.com  # trailing comment
127.0.0.1   tracker.example.net  second.example.org
::1 v6.example.com
0.0.0.0 Upper.Example.COM.
0.0.0.0 bad..name
"""
PLAIN = """\
# plain domains
casino.example

poker.example.co.uk  # inline comment
*.wild.example
10.0.0.1
bücher.example
"""
ADBLOCK = """\
[Adblock Plus 2.0]
! Title: test
||ads.example^
||pipe.example^|
@@||good.ads.example^
||*.wild.example^
.dot.example^
example.org##.banner
||tracker.example^$third-party
||scoped.example/path^
/ads[0-9]+/
|http://url.example^
||important.example^$important
plain.example
"""


@pytest.mark.parametrize(
    ("text", "fmt", "entries", "exceptions", "skipped", "invalid"),
    [
        (HOSTS, "hosts", 5, 0, 4, 1),
        (PLAIN, "plain", 4, 0, 1, 0),
        (ADBLOCK, "adblock", 6, 1, 5, 0),
    ],
)
def test_formats_detected_and_counted(
    tmp_path: Path, text: str, fmt: str, entries: int, exceptions: int, skipped: int, invalid: int
) -> None:
    (stats,) = check_lists([ListSpec("c", write(tmp_path, "l.txt", text))])
    assert (stats.format, stats.entries, stats.exceptions, stats.skipped, stats.invalid) == (
        fmt,
        entries,
        exceptions,
        skipped,
        invalid,
    )


@pytest.mark.parametrize(
    ("qname", "blocked"),
    [
        ("ads.example.com", True),
        ("deep.sub.ads.example.com", True),
        ("example.com", False),
        ("notads.example.com", False),
        ("tracker.example.net", True),
        ("second.example.org", True),
        ("v6.example.com", True),
        ("upper.example.com", True),
        ("localhost", False),
        ("ip6-localhost", False),
    ],
)
def test_hosts_matching(tmp_path: Path, qname: str, blocked: bool) -> None:
    index = index_of(tmp_path, ("ads", HOSTS))
    assert bool(index.lookup(qname)) is blocked


@pytest.mark.parametrize(
    ("qname", "blocked"),
    [
        ("casino.example", True),
        ("www.casino.example", True),
        ("poker.example.co.uk", True),
        ("wild.example", False),  # *.name blocks only below name
        ("a.wild.example", True),
        ("b.a.wild.example", True),
        ("xn--bcher-kva.example", True),
        ("10.0.0.1", False),
        ("example", False),
    ],
)
def test_plain_matching(tmp_path: Path, qname: str, blocked: bool) -> None:
    index = index_of(tmp_path, ("gambling", PLAIN))
    assert bool(index.lookup(qname)) is blocked


@pytest.mark.parametrize(
    ("qname", "blocked"),
    [
        ("ads.example", True),
        ("x.ads.example", True),
        ("good.ads.example", False),  # exception beats block
        ("deeper.good.ads.example", False),  # and covers subdomains
        ("pipe.example", True),
        ("wild.example", False),
        ("x.wild.example", True),
        ("dot.example", False),
        ("x.dot.example", True),
        ("tracker.example", False),  # $third-party is not a pure domain block
        ("scoped.example", False),  # path rule skipped
        ("url.example", False),
        ("important.example", True),
        ("plain.example", True),
        ("example.org", False),
    ],
)
def test_adblock_matching(tmp_path: Path, qname: str, blocked: bool) -> None:
    index = index_of(tmp_path, ("ads", ADBLOCK))
    assert bool(index.lookup(qname)) is blocked


def test_categories_masks_and_exceptions_per_category(tmp_path: Path) -> None:
    index = index_of(
        tmp_path,
        ("adult", "example.com\n"),
        ("social", "||example.com^\n@@||ok.example.com^\n"),
        ("games", "*.example.com\n"),
        ("adult", "other.example\n"),  # a second list feeding the same category
    )
    assert index.categories == ("adult", "social", "games")
    adult, social, games = (index.bit(c) for c in index.categories)
    assert (adult, social, games) == (1, 2, 4)
    assert index.bit("missing") == 0
    assert index.lookup("example.com") == adult | social
    assert index.lookup("www.example.com") == adult | social | games
    assert index.lookup("ok.example.com") == adult | games  # social's exception only
    assert index.lookup("other.example") == adult
    assert index.names(adult | games) == ("adult", "games")
    assert len(index) == 3  # example.com, ok.example.com, other.example


def test_many_categories_use_separate_planes(tmp_path: Path) -> None:
    lists = [(f"c{i}", f"site{i}.example\n@@||ok.site{i}.example^\n") for i in range(20)]
    index = index_of(tmp_path, *lists)
    for i in range(20):
        assert index.lookup(f"www.site{i}.example") == 1 << i
        assert index.lookup(f"ok.site{i}.example") == 0


def test_statutory_mask(tmp_path: Path) -> None:
    specs = [
        ListSpec("iwf", write(tmp_path, "iwf.txt", "abuse.example\n"), statutory=True),
        ListSpec("ads", write(tmp_path, "ads.txt", "ads.example\n")),
    ]
    index, stats = load_lists(specs, None)
    assert index.statutory_mask == index.bit("iwf") == 1
    assert [s.category for s in stats] == ["iwf", "ads"]


def test_empty_index_blocks_nothing() -> None:
    index = CategoryIndex.empty()
    assert index.lookup("example.com") == 0
    assert len(index) == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("# only comments\n\n", "no usable entries"),
        (b"\x00\x01\x02binary\x00", "looks binary"),
        (b"\xff\xfe\xfa garbage\n\xc3\x28\n" * 5, "no usable entries"),
        ("<html>\n<body>not a list</body>\n</html>\nok.example\n", "unparseable"),
    ],
)
def test_broken_lists_give_clear_errors(tmp_path: Path, content: str | bytes, problem: str) -> None:
    source = write(tmp_path, "broken.txt", content)
    with pytest.raises(ListError, match=problem) as caught:
        check_lists([ListSpec("c", source)])
    assert source in str(caught.value)


def test_check_lists_names_every_problem(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.txt")
    empty = write(tmp_path, "empty.txt", "")
    good = write(tmp_path, "good.txt", "good.example\n")
    with pytest.raises(ListError) as caught:
        check_lists([ListSpec("a", missing), ListSpec("b", good), ListSpec("c", empty)])
    message = str(caught.value)
    assert f"{missing}: cannot read" in message
    assert f"{empty}: is empty" in message
    assert good not in message
    with pytest.raises(ListError, match="cannot read"):
        load_lists([ListSpec("a", missing)], None)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("http://lists.example.com/x.txt", "must be https"),
        ("http://10.0.0.1/x.txt", "must be https"),
        ("https:///x.txt", "has no host"),
    ],
)
def test_spec_refuses_plain_http_off_loopback(source: str, problem: str) -> None:
    with pytest.raises(ListError, match=problem):
        ListSpec("c", source)
    ListSpec("c", "http://127.0.0.1:8080/x.txt")
    ListSpec("c", "http://[::1]:8080/x.txt")


def test_spec_validation() -> None:
    with pytest.raises(ListError, match="refresh_h"):
        ListSpec("c", "/x", refresh_h=0)
    with pytest.raises(ListError, match="category"):
        ListSpec(" ", "/x")


def test_explain_reports_lines_and_rules(tmp_path: Path) -> None:
    adblock = write(tmp_path, "ads.txt", ADBLOCK)
    hosts = write(tmp_path, "hosts.txt", HOSTS)
    plain = write(tmp_path, "plain.txt", "# x\nexample\nADS.example.\n")
    specs = [ListSpec("ads", adblock), ListSpec("trackers", hosts), ListSpec("misc", plain)]
    matches = explain("Deeper.Good.Ads.Example.", specs, None)
    assert [(m.category, m.line, m.rule, m.exception) for m in matches] == [
        ("ads", 3, "||ads.example^", False),
        ("ads", 5, "@@||good.ads.example^", True),
        ("misc", 2, "example", False),
        ("misc", 3, "ADS.example.", False),
    ]
    assert all(m.source in (adblock, plain) for m in matches)
    found = explain("x.wild.example", specs, None)
    assert [(m.category, m.line) for m in found] == [("ads", 6), ("misc", 2)]
    assert [(m.category, m.line) for m in explain("wild.example", specs, None)] == [("misc", 2)]
    with pytest.raises(ListError, match="not a valid DNS name"):
        explain("bad..name", specs, None)


def test_crlf_bom_and_no_final_newline(tmp_path: Path) -> None:
    source = write(tmp_path, "l.txt", "\ufeffone.example\r\ntwo.example\r\nthree.example")
    (stats,) = check_lists([ListSpec("c", source)])
    assert stats.entries == 3
    index = index_of(tmp_path, ("c", "\ufeffone.example\r\ntwo.example\r\nthree.example"))
    assert all(index.lookup(n) for n in ("one.example", "two.example", "three.example"))
    assert [m.line for m in explain("three.example", [ListSpec("c", source)], None)] == [3]


def test_bulk_and_careful_paths_agree(tmp_path: Path) -> None:
    # A big clean file goes through the bulk path; the same names with one odd line per
    # chunk go through the careful path. Both must find the same names.
    names = [f"n{i}.example{i % 7}.com" for i in range(30000)]
    clean = index_of(tmp_path, ("c", "\n".join(names) + "\n"))
    messy = index_of(tmp_path, ("c", "\n".join(n + "  " for n in names) + "\n"))
    hosts = index_of(tmp_path, ("c", "".join(f"0.0.0.0 {n}\n" for n in names)))
    adblock = index_of(tmp_path, ("c", "! x\n" + "".join(f"||{n}^\n" for n in names)))
    for index in (clean, messy, hosts, adblock):
        assert len(index) == len(names)
        assert all(index.lookup("www." + n) == 1 for n in names[::97])
        assert index.lookup("example1.com") == 0
