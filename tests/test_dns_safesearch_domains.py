"""SafeSearch covers every search domain Google lists (agent/filter/data/google_domains.txt),
through the real server: www.google.ae unrewritten was unfiltered search."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import dnslib
import pytest

from agent.filter.data import GOOGLE_DOMAINS, google_suffixes
from agent.filter.safesearch_targets import GOOGLE_NAMES, GOOGLE_TARGET, targets_for
from tests.dns_support import (
    SAFE_ADDRESS,
    FakeUpstream,
    RunningDns,
    ask,
    dig,
    free_dns_port,
    running_dns,
    write_config,
)

PUPIL = "127.0.1.5"  # safesearch = true in write_config's pupils
STAFF = "127.0.2.5"  # no safesearch
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[RunningDns]:
    port = free_dns_port()
    path = write_config(tmp_path_factory.mktemp("dns"), [upstream.address], port)
    with running_dns(path) as running:
        yield running


def test_the_list_is_googles_search_domains() -> None:
    suffixes = google_suffixes()
    assert 180 <= len(suffixes) <= 200  # Google lists about 190
    assert suffixes[0] == "com" and suffixes[-1] == "cat"  # Google's own order
    for wanted in ("ae", "co.uk", "com.br", "com.af", "ad", "co.za", "com.au", "ie", "rs"):
        assert wanted in suffixes
    assert len(set(suffixes)) == len(suffixes)
    assert len(GOOGLE_NAMES) == 2 * len(suffixes)
    assert set(targets_for(True, "off")) >= {"google.ae", "www.google.ae", "www.google.co.uk"}
    assert not set(targets_for(False, "strict")) & set(GOOGLE_NAMES)


def test_the_file_says_where_it_came_from_and_how_to_refresh_it() -> None:
    text = resources.files("agent.filter.data").joinpath(GOOGLE_DOMAINS).read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    joined = "\n".join(header)
    assert "https://www.google.com/supported_domains" in joined
    assert "scripts/refresh_google_domains.py" in joined
    assert "2026-" in joined  # when it was written
    script = ROOT / "scripts" / "refresh_google_domains.py"
    assert "https://www.google.com/supported_domains" in script.read_text()


def test_the_data_files_are_in_the_built_package(tmp_path: Path) -> None:
    # Build the wheel as a release would (setuptools, package data from pyproject.toml), from a
    # copy of the sources so the working tree gets no build/ or egg-info.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("common", "agent", "hub"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    out = tmp_path / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "--no-index", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("hedgerow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "agent/filter/data/google_domains.txt" in names
    assert "agent/filter/data/encrypted_dns.txt" in names


@pytest.mark.parametrize(
    "name",
    [
        "www.google.ae",
        "google.ae",
        "www.google.com.br",
        "google.co.uk",
        "www.google.com.af",
        "www.google.cat",
        "google.co.zw",
        "WWW.Google.Com.Br",  # case does not matter to DNS
    ],
)
def test_every_google_domain_is_rewritten_for_pupils(dns: RunningDns, name: str) -> None:
    reply = ask(dns.port, name, "A", PUPIL)
    assert reply.header.rcode == dnslib.RCODE.NOERROR
    first = reply.rr[0]
    assert first.rtype == dnslib.QTYPE.CNAME and str(first.rdata) == GOOGLE_TARGET + "."
    assert [str(rr.rdata) for rr in reply.rr if rr.rtype == dnslib.QTYPE.A] == [SAFE_ADDRESS]


def test_staff_get_google_unrewritten_and_dig_sees_the_rewrite(dns: RunningDns) -> None:
    staff = ask(dns.port, "www.google.ae", "A", STAFF)
    assert [str(rr.rdata) for rr in staff.rr] == ["192.0.2.1"]
    out = dig(dns.port, "www.google.com.br", source=PUPIL)
    assert f"{GOOGLE_TARGET}." in out and SAFE_ADDRESS in out
    # HTTPS records for any of them would carry hints past the rewrite: withheld for pupils
    assert not ask(dns.port, "www.google.ae", "HTTPS", PUPIL).rr


def test_a_lookalike_is_not_rewritten(dns: RunningDns) -> None:
    for name in ("www.google.example", "google.ae.example", "images.google.ae"):
        reply = ask(dns.port, name, "A", PUPIL)
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.1"], name
