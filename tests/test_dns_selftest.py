"""hedgerow-dns selftest against a real running server: every check passes when the server
serves the same config, fails when it does not block what the config says, and a group whose
clients are not on this host is reported as not tested (not as a pass)."""

from __future__ import annotations

import json
from pathlib import Path

from agent.dns.probe import local_addresses
from tests.dns_support import FakeUpstream, free_dns_port, running_dns, write_config
from tests.test_dns_cli import run


def test_selftest_passes_against_the_same_config(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        with running_dns(path):
            result = run("selftest", "--config", str(path))
            assert result.returncode == 0, result.stdout + result.stderr
            out = result.stdout
            assert "group pupils (asked from 127.0.1.1)" in out
            assert "pass gambling casino.example: expected blocked (0.0.0.0)" in out
            assert "pass iwf csam.example" in out  # statutory, despite the pupils' allow entry
            assert "pass safesearch www.google.com: expected CNAME forcesafesearch" in out
            assert "pass youtube www.youtube.com: expected CNAME restrictmoderate" in out
            assert "pass bypass use-application-dns.net: expected NXDOMAIN" in out
            assert "pass bypass dns.google: expected NXDOMAIN" in out  # a public DoH resolver
            assert "FAIL" not in out and out.strip().endswith(f"(127.0.0.1:{port})")
            data = json.loads(run("selftest", "--config", str(path), "--json").stdout)
            assert data["summary"]["ok"] is True and data["summary"]["failed"] == 0
            staff = next(g for g in data["groups"] if g["group"] == "staff")
            assert {c["what"] for c in staff["checks"]} == {"adult", "iwf", "youtube", "bypass"}


def test_selftest_fails_when_the_server_does_not_block(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        (tmp_path / "served").mkdir()
        served = write_config(tmp_path / "served", [upstream.address], port)
        expected_dir = tmp_path / "expected"
        expected_dir.mkdir()
        expected = write_config(expected_dir, [upstream.address], port)
        text = expected.read_text()
        text = text.replace('block = ["adult"]', 'block = ["adult", "gambling"]')
        text = text.replace('youtube = "moderate"', 'youtube = "moderate"\nsafesearch = true')
        expected.write_text(text)
        with running_dns(served):
            result = run("selftest", "--config", str(expected), "--server", f"127.0.0.1:{port}")
            assert result.returncode == 1, result.stdout
            out = result.stdout
            assert (
                "FAIL gambling casino.example: expected blocked (0.0.0.0), got NOERROR A 192.0.2.1"
                in out
            )
            assert "FAIL safesearch www.google.com" in out
            assert "pass adult adult.example" in out  # what is blocked still passes
            assert "summary: FAIL" in out


def test_group_without_local_address_is_not_tested(tmp_path: Path) -> None:
    assert not any(a.startswith("198.51.100.") for a in local_addresses())  # TEST-NET-2
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        with running_dns(path):
            text = path.read_text().replace(
                'allow_clients = ["127.0.0.0/9", "::1/128"]',
                'allow_clients = ["127.0.0.0/9", "::1/128", "198.51.100.0/24"]',
            )
            text += '\n[groups.office]\nclients = ["198.51.100.0/24"]\nblock = ["adult"]\n'
            path.write_text(text)
            result = run("selftest", "--config", str(path), "--json")
            data = json.loads(result.stdout)
            office = next(g for g in data["groups"] if g["group"] == "office")
            assert office["testable"] is False and "not testable" in office["note"]
            assert data["summary"]["not_testable"] == ["office"]
            assert result.returncode == 0  # every testable check passed
            plain = run("selftest", "--config", str(path)).stdout
            assert "group office: NOT TESTED" in plain and "NOT TESTED from this host" in plain
