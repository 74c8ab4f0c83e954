"""hedgerow-dns explain: why a matching list line did not apply (outside its schedule,
allowlisted, not blocked for the group, unblocked by an exception), the query type by name,
and a --client that is not an address refused with one clear line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.dns_support import free_dns_port, write_config
from tests.test_dns_cli import run

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The usual config, with the pupils' social_networks schedule on a day that is not today
    (so it is inactive whenever the test runs)."""
    path = write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port())
    other_day = DAYS[(dt.datetime.now().weekday() + 3) % 7]
    text = path.read_text()
    assert '"mon-fri 08:00-16:00"' in text
    path.write_text(text.replace('"mon-fri 08:00-16:00"', f'"{other_day} 00:00-24:00"'))
    return path


def explain(config: Path, *args: str) -> str:
    result = run("explain", "--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_outside_its_schedule(config: Path) -> None:
    out = explain(config, "www.social.example", "--client", "127.0.1.3")
    assert "verdict: resolved" in out, out
    assert "social.txt line 2: rule ||social.example^ (did not apply: outside its schedule: " in out
    assert "[groups.pupils] schedule.social_networks = " in out


def test_allowlisted(config: Path) -> None:
    out = explain(config, "lucky.casino.example", "--client", "127.0.1.3")
    assert (
        "gambling.txt line 2: rule casino.example (did not apply: allowlisted: [groups.pupils] "
        'allow = "lucky.casino.example")' in out
    ), out


def test_a_group_that_does_not_block_the_category(config: Path) -> None:
    out = explain(config, "casino.example", "--client", "127.0.2.9")
    assert "group staff" in out
    assert "(did not apply: group staff does not block gambling)" in out, out


def test_an_exception_unblocks_and_the_line_that_decided_has_no_reason(config: Path) -> None:
    out = explain(config, "ok.social.example", "--client", "127.0.1.3")
    assert "rule ||social.example^ (did not apply: an exception in a social_networks list" in out
    assert "exception @@||ok.social.example^\n" in out, out
    out = explain(config, "casino.example", "--client", "127.0.1.3")
    assert "verdict: blocked" in out and "line 2: rule casino.example\n" in out, out


def test_statutory_blocks_whatever_the_group_allows(config: Path) -> None:
    out = explain(config, "csam.example", "--client", "127.0.1.3")
    assert "category: iwf" in out and "did not apply" not in out, out


def test_the_query_type_is_named(config: Path) -> None:
    out = explain(config, "casino.example", "--type", "aaaa", "--client", "127.0.1.3")
    assert out.startswith("casino.example AAAA: client 127.0.1.3"), out
    assert "type 28" not in out
    out = explain(config, "casino.example", "--client", "127.0.1.3")
    assert out.startswith("casino.example A: "), out
    data = json.loads(explain(config, "casino.example", "--type", "65280", "--json"))
    assert {item["type"] for item in data} == {"TYPE65280"}
    staff = next(item for item in data if item["group"] == "staff")
    assert staff["unapplied"] == ["group staff does not block gambling"]


@pytest.mark.parametrize("client", ["pupil-laptop", "10.1.2.0/24", "10.1.2.345", ""])
def test_a_client_that_is_not_an_address_is_refused(config: Path, client: str) -> None:
    result = run("explain", "--config", str(config), "casino.example", "--client", client)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"hedgerow-dns: error: --client {client}: not an IP address (explain asks as one "
        "client, e.g. --client 10.1.2.34; leave --client out to explain for every group)"
    ]


def test_an_ipv6_client_is_an_address(config: Path) -> None:
    out = explain(config, "casino.example", "--client", "::1")
    assert "client ::1" in out and "group pupils" in out
