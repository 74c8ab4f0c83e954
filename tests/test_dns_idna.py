"""International names in lists and in explain: IDNA 2008 with the UTS #46 mapping,
non-transitional, as browsers ask for them (`faß.de` is `xn--fa-hia.de`, not IDNA 2003's
`fass.de`). A name IDNA 2008 refuses is an invalid list line, counted, never a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.filter.lists.names import NAME_PATTERN, normalise
from agent.filter.lists.parser import parse_file
from tests.dns_support import (
    FakeUpstream,
    RunningDns,
    ask,
    free_dns_port,
    running_dns,
    write_config,
)
from tests.test_dns_cli import run

PUPIL = "127.0.1.5"
STAFF = "127.0.2.5"
# Appended to write_config's gambling list (plain format): three IDN entries, and one line
# IDNA 2008 refuses (a symbol, which IDNA 2003 took as xn--n3h.net).
IDN_LINES = "faß.de\n*.bücher.example\nΠαράδειγμα.δοκιμή\n☃.net\n"  # noqa: RUF001 (Greek on purpose)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2003 (transitional) said fass.de
        ("FAß.DE", "xn--fa-hia.de"),
        ("faß.de.", "xn--fa-hia.de"),
        ("faß。de", "xn--fa-hia.de"),  # UTS #46 maps the ideographic full stop
        ("bücher.example", "xn--bcher-kva.example"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("παράδειγμα.δοκιμή", "xn--hxajbheg2az3al.xn--jxalpdlp"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("_dmarc.faß.de", "_dmarc.xn--fa-hia.de"),  # ASCII labels as lists write them
        ("xn--fa-hia.de", "xn--fa-hia.de"),  # already an A-label
        ("ex\u00adample.com", "example.com"),  # a soft hyphen is ignored (UTS #46)
        ("fass.de", "fass.de"),
        # refused by IDNA 2008: symbols, a joiner out of context, mixed digit sets, too long
        ("☃.net", None),
        ("i❤.ws", None),
        ("a\u200db.example", None),
        ("\u0660\u06f0.example", None),
        ("a_ß.de", None),
        ("x" * 70 + "ß.de", None),
        ("\ufffd.de", None),
        ("faß..de", None),
    ],
)
def test_normalise(name: str, expected: str | None) -> None:
    assert normalise(name) == expected


@given(st.text(max_size=80))
def test_normalise_never_raises_and_gives_a_valid_name(text: str) -> None:
    import re

    result = normalise(text)
    assert result is None or re.fullmatch(NAME_PATTERN, result) is not None


@given(
    st.lists(
        st.text("abcdefghijklmnopqrstuvwxyzßäöüéèçñøåæ", min_size=1, max_size=20),
        min_size=1,
        max_size=3,
    )
)
def test_names_of_latin_letters_are_accepted(labels: list[str]) -> None:
    # the oracle: names any browser would ask for always convert, to their A-labels
    name = ".".join(labels) + ".de"
    result = normalise(name)
    assert result is not None and result.isascii() and result.endswith(".de")
    assert result.count(".") == name.count(".")


def test_a_list_with_idn_entries_counts_the_refused_line(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("casino.example\n" + IDN_LINES + "0.0.0.0 faß.example\n")
    plain = parse_file(path, str(path), "gambling")
    assert plain.stats.invalid == 1  # ☃.net
    assert plain.stats.entries + plain.stats.exceptions == 5
    adblock = tmp_path / "adblock.txt"
    adblock.write_text("! list\n||faß.de^\n||☃.net^\n||casino.example^\n@@||ok.faß.de^\n")
    parsed = parse_file(adblock, str(adblock), "gambling")
    assert (parsed.stats.entries, parsed.stats.exceptions, parsed.stats.invalid) == (2, 1, 1)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Path:
    directory = tmp_path_factory.mktemp("idna")
    path = write_config(directory, [upstream.address], free_dns_port())
    with open(directory / "lists" / "gambling.txt", "a", encoding="utf-8") as handle:
        handle.write(IDN_LINES)
    return path


@pytest.fixture(scope="module")
def dns(config: Path) -> Iterator[RunningDns]:
    with running_dns(config) as running:
        yield running


@pytest.mark.parametrize(
    ("name", "blocked"),
    [
        ("xn--fa-hia.de", True),  # what a browser asks for faß.de
        ("www.xn--fa-hia.de", True),
        ("XN--FA-HIA.DE", True),
        ("fass.de", False),  # IDNA 2003's reading of the entry: not what was listed
        ("shop.xn--bcher-kva.example", True),
        ("xn--bcher-kva.example", False),  # *.name: subdomains only
        ("xn--hxajbheg2az3al.xn--jxalpdlp", True),
        ("xn--n3h.net", False),  # the refused line blocks nothing
    ],
)
def test_the_server_blocks_the_names_browsers_ask_for(
    dns: RunningDns, name: str, blocked: bool
) -> None:
    reply = ask(dns.port, name, "A", PUPIL)
    addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == dnslib.QTYPE.A]
    assert addresses == (["0.0.0.0"] if blocked else ["192.0.2.1"])


def test_explain_converts_the_name_as_the_lists_do(config: Path) -> None:
    result = run("explain", "--config", str(config), "faß.de", "--client", "127.0.1.3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "xn--fa-hia.de" in out and "verdict: blocked" in out and "category: gambling" in out
    (match,) = [line for line in out.splitlines() if "gambling.txt line 4" in line]
    assert "faß.de" in match  # the list line as written
    data = json.loads(run("explain", "--config", str(config), "FAß.de.", "--json").stdout)
    assert {item["qname"] for item in data} == {"xn--fa-hia.de"}
    assert {item["group"]: item["verdict"]["kind"] for item in data} == {
        "pupils": "blocked",
        "staff": "resolved",
    }
    refused = run("explain", "--config", str(config), "☃.net", "--client", "127.0.1.3")
    assert refused.returncode != 0 and "not a valid DNS name" in refused.stderr


def test_check_counts_the_refused_line_as_invalid(config: Path) -> None:
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("list gambling")]
    assert "1 invalid" in line


def test_an_international_allow_entry_allows_what_browsers_ask_for(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = write_config(tmp_path, [upstream.address], free_dns_port())
    with open(tmp_path / "lists" / "gambling.txt", "a", encoding="utf-8") as handle:
        handle.write(IDN_LINES)
    text = path.read_text(encoding="utf-8")
    old = 'allow = ["bbc.co.uk", '
    assert old in text
    path.write_text(text.replace(old, 'allow = ["FAß.de", "bbc.co.uk", ', 1), encoding="utf-8")
    assert run("check", "--config", str(path)).returncode == 0
    result = run("explain", "--config", str(path), "xn--fa-hia.de", "--client", "127.0.1.3")
    assert result.returncode == 0, result.stderr
    assert "verdict: resolved" in result.stdout and "rule: allow xn--fa-hia.de" in result.stdout
