"""The built-in list of public encrypted-DNS resolvers (agent/filter/data/encrypted_dns.txt):
blocked for every group by default, through the real server, and reported in category
`bypass` so the hub raises a bypass alert; `check` warns when a pupil group lets them through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest

from agent.dns.client_window import Window
from agent.dns.config import load_config
from agent.filter.data import encrypted_dns
from agent.filter.querylog import QueryRecord
from common.categories import ANTI_BYPASS, BYPASS, lookup
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
LIBRARY = "127.0.3.5"  # block_encrypted_dns on, but allows one resolver by name
# Staff turn the list off (and say they hold no pupils); a library group allows one resolver.
EXTRA = """
[groups.library]
clients = ["127.0.3.0/24"]
allow = ["dns.quad9.net"]
"""


class Records:
    """A query-record sink that keeps everything (tests only)."""

    def __init__(self) -> None:
        self.items: list[QueryRecord] = []

    def offer(self, record: QueryRecord) -> None:
        self.items.append(record)


def staff_off(path: Path) -> Path:
    text = path.read_text()
    old = 'youtube = "moderate"\n'
    assert old in text
    path.write_text(text.replace(old, old + "block_encrypted_dns = false\npupils = false\n"))
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def records() -> Records:
    return Records()


@pytest.fixture(scope="module", params=[32, 0], ids=["batched", "plain"])
def dns(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeUpstream,
    records: Records,
) -> Iterator[RunningDns]:
    port = free_dns_port()
    path = write_config(
        tmp_path_factory.mktemp("dns"),
        [upstream.address],
        port,
        extra=EXTRA,
        udp_batch=int(request.param),
    )
    with running_dns(staff_off(path), sinks=(records,)) as running:
        yield running


def rcode(reply: dnslib.DNSRecord) -> str:
    return str(dnslib.RCODE.get(reply.header.rcode))


def ede(reply: dnslib.DNSRecord) -> int | None:
    for rr in reply.ar:
        if rr.rtype == dnslib.QTYPE.OPT:
            for opt in rr.rdata:
                if opt.code == 15:
                    return int.from_bytes(bytes(opt.data)[:2], "big")
    return None


def test_the_list_is_versioned_and_holds_the_well_known_resolvers() -> None:
    resolvers = encrypted_dns()
    assert resolvers.version  # the file's `version` line
    for name in (
        "dns.google",
        "dns.google.com",
        "cloudflare-dns.com",
        "one.one.one.one",
        "doh.opendns.com",
        "dns.quad9.net",
        "adguard-dns.com",
        "doh.cleanbrowsing.org",
        "dns.nextdns.io",
        "doh.mullvad.net",
    ):
        assert resolvers.match(name) == name
    # a name below a listed one is the same resolver (personal and filtered variants)
    assert resolvers.match("mozilla.cloudflare-dns.com") == "cloudflare-dns.com"
    assert resolvers.match("abc123.dns.nextdns.io") == "dns.nextdns.io"
    assert resolvers.match("dns.adguard-dns.com") == "adguard-dns.com"
    # but not the vendor's other sites, nor a lookalike
    for name in ("google.com", "www.google.com", "cloudflare.com", "nextdns.io", "x-dns.google.io"):
        assert resolvers.match(name) is None, name


@pytest.mark.parametrize(
    "name",
    [
        "dns.google",
        "dns.google.com",
        "cloudflare-dns.com",
        "mozilla.cloudflare-dns.com",
        "one.one.one.one",
        "doh.opendns.com",
        "dns.quad9.net",
        "dns.adguard-dns.com",
        "doh.cleanbrowsing.org",
        "dns.nextdns.io",
        "abc123.dns.nextdns.io",
        "doh.mullvad.net",
        "DNS.Google.",
    ],
)
def test_pupils_get_nxdomain_for_public_resolvers(
    dns: RunningDns, upstream: FakeUpstream, name: str
) -> None:
    asked = upstream.count(name.lower().rstrip("."))
    for qtype in ("A", "AAAA", "HTTPS"):
        for tcp in (False, True):
            reply = ask(dns.port, name, qtype, PUPIL, edns=1232, tcp=tcp)
            assert rcode(reply) == "NXDOMAIN" and not reply.rr, (name, qtype, tcp)
            assert ede(reply) == 17  # Filtered: a policy answer, as for the DoH canary
    assert upstream.count(name.lower().rstrip(".")) == asked  # never forwarded


def test_a_group_that_turns_it_off_resolves_them_and_its_cache_never_reaches_pupils(
    dns: RunningDns,
) -> None:
    for _ in range(3):  # the second and third are the staff group's cached answers
        staff = ask(dns.port, "dns.google", "A", STAFF)
        assert [str(rr.rdata) for rr in staff.rr] == ["192.0.2.1"]
        pupil = ask(dns.port, "dns.google", "A", PUPIL)  # the fast path must not serve the cache
        assert rcode(pupil) == "NXDOMAIN"


def test_an_allow_entry_lets_one_resolver_through_for_its_group(dns: RunningDns) -> None:
    allowed = ask(dns.port, "dns.quad9.net", "A", LIBRARY)
    assert [str(rr.rdata) for rr in allowed.rr] == ["192.0.2.1"]
    assert rcode(ask(dns.port, "dns.google", "A", LIBRARY)) == "NXDOMAIN"
    assert rcode(ask(dns.port, "dns.quad9.net", "A", PUPIL)) == "NXDOMAIN"


def test_blocked_lookups_are_reported_as_bypass_attempts(dns: RunningDns, records: Records) -> None:
    before = len(records.items)
    ask(dns.port, "cloudflare-dns.com", "A", PUPIL)
    found = [r for r in records.items[before:] if r.qname == "cloudflare-dns.com"]
    assert [(r.verdict, r.category, r.group) for r in found] == [("bypass", ANTI_BYPASS, "pupils")]
    assert found[0].rule is not None and encrypted_dns().version in found[0].rule
    # The summary the hub receives lists it as a blocked attempt in `bypass`...
    window = Window(start_ms=0)
    window.add(found[0])
    (summary,) = window.summaries(1000, {})
    assert summary["categories"] == {ANTI_BYPASS: 1}
    assert summary["blocked"] == [{"name": "cloudflare-dns.com", "category": "bypass", "count": 1}]
    # ...which is the category the hub's bypass rule covers by default.
    category = lookup(ANTI_BYPASS)
    assert category is not None and category.rule == BYPASS


def test_config_keys_and_their_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port(), extra=EXTRA)
    config = load_config(path)
    assert config.group("pupils").block_encrypted_dns and config.group("pupils").pupils
    assert config.group("library").block_encrypted_dns and config.group("library").pupils
    assert not config.group("staff").pupils  # named like staff: holds no pupils by default
    text = path.read_text().replace(
        "[groups.library]\n", "[groups.library]\nblock_bypass = false\npupils = true\n"
    )
    path.write_text(text)
    library = load_config(path).group("library")
    assert not library.block_encrypted_dns  # follows block_bypass unless set
    path.write_text(text.replace("pupils = true\n", "pupils = true\nblock_encrypted_dns = 1\n"))
    result = run("check", "--config", str(path))
    assert result.returncode == 1
    assert "block_encrypted_dns" in result.stderr


def test_check_warns_when_a_pupil_group_allows_public_resolvers(tmp_path: Path) -> None:
    path = write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port(), extra=EXTRA)
    quiet = run("check", "--config", str(path))
    assert quiet.returncode == 0, quiet.stderr
    assert "block_encrypted_dns" not in quiet.stderr
    # staff turning it off is no warning when they hold no pupils (the default for "staff")
    text = path.read_text().replace(
        'youtube = "moderate"\n', 'youtube = "moderate"\nblock_encrypted_dns = false\n'
    )
    path.write_text(text)
    staff = run("check", "--config", str(path))
    assert staff.returncode == 0 and "block_encrypted_dns" not in staff.stderr
    # a pupil group that turns it off is warned about, and check still passes
    path.write_text(text.replace("[groups.library]\n", "[groups.library]\nblock_bypass = false\n"))
    pupils = run("check", "--config", str(path))
    assert pupils.returncode == 0, pupils.stderr
    warnings = [line for line in pupils.stderr.splitlines() if "block_encrypted_dns" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: [groups.library]")
    assert "public encrypted DNS resolver" in warnings[0]
    # a staff group that says it holds pupils is warned about too
    path.write_text(
        text.replace(
            "block_encrypted_dns = false\n", "block_encrypted_dns = false\npupils = true\n"
        )
    )
    both = run("check", "--config", str(path))
    assert "warning: [groups.staff] block_encrypted_dns" in both.stderr
