"""selftest against a real server: a bypass canary that a blocklist also holds passes when it
is blocked (lists decide before the anti-bypass link), and with no server running selftest
says so in one line and exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

from tests.dns_support import FakeUpstream, free_dns_port, running_dns, write_config
from tests.test_dns_cli import run

BYPASS_LIST = """
[[lists]]
category = "bypass"
source = "{source}"
"""


def with_bypass_list(tmp_path: Path, port: int, upstream: str, statutory: bool = False) -> Path:
    lists = tmp_path / "lists"
    lists.mkdir(exist_ok=True)
    (lists / "bypass.txt").write_text("mask.icloud.com\nvpn.example\n")
    path = write_config(tmp_path, [upstream], port)
    text = path.read_text()
    text = text.replace(
        "\n[groups.pupils]", BYPASS_LIST.format(source=lists / "bypass.txt") + "\n[groups.pupils]"
    )
    # pupils block the bypass list; staff do not, so they still get the canary's NXDOMAIN
    text = text.replace(
        'block = ["gambling", "adult", "social_networks"]',
        'block = ["gambling", "adult", "social_networks", "bypass"]',
    )
    path.write_text(text)
    return path


def test_a_canary_on_a_blocklist_passes_when_blocked(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = with_bypass_list(tmp_path, port, upstream.address)
        with running_dns(path):
            result = run("selftest", "--config", str(path))
            assert result.returncode == 0, result.stdout + result.stderr
            pupils, staff = result.stdout.split("group staff")
            assert (
                "pass bypass mask.icloud.com: expected blocked (0.0.0.0), got NOERROR A 0.0.0.0"
                in pupils
            )
            assert "pass bypass use-application-dns.net: expected NXDOMAIN" in pupils
            assert "pass bypass mask.icloud.com: expected NXDOMAIN" in staff
            assert "FAIL" not in result.stdout
            data = json.loads(run("selftest", "--config", str(path), "--json").stdout)
            assert data["summary"]["ok"] is True


def test_a_canary_blocklist_the_server_does_not_have_still_fails(tmp_path: Path) -> None:
    # The oracle: the canary's blocked expectation is not a pass for anything.
    with FakeUpstream() as upstream:
        port = free_dns_port()
        (tmp_path / "served").mkdir()
        served = write_config(tmp_path / "served", [upstream.address], port)
        (tmp_path / "expected").mkdir()
        expected = with_bypass_list(tmp_path / "expected", port, upstream.address)
        with running_dns(served):
            result = run("selftest", "--config", str(expected), "--server", f"127.0.0.1:{port}")
            assert result.returncode == 1
            assert (
                "FAIL bypass mask.icloud.com: expected blocked (0.0.0.0), got NXDOMAIN"
                in result.stdout
            ), result.stdout


def test_no_server_running_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_dns_port()
    path = write_config(tmp_path, ["127.0.0.1:5353"], port)
    result = run("selftest", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""  # not a line per question of "got no reply"
    assert result.stderr.splitlines() == [
        f"hedgerow-dns: error: no DNS server answers at 127.0.0.1:{port}: is hedgerow-dns "
        "serve running? (--server HOST:PORT asks another address)"
    ]
    result = run("selftest", "--config", str(path), "--server", f"[::1]:{port}", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert f"no DNS server answers at [::1]:{port}" in result.stderr
