"""hedgerow-dns check / explain / serve as a user runs them: real processes, real signals."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.dns.cli import main
from agent.dns.config import load_config
from common.errors import ConfigError
from tests.dns_support import FakeUpstream, ask, free_dns_port, write_config
from tests.services import stop_process

CLI = [sys.executable, "-m", "agent.dns.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (fast); test_check_as_a_process runs the real console."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse --help
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def test_check_as_a_process(config: Path) -> None:
    result = subprocess.run(
        [*CLI, "check", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "ok:" in result.stdout


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port())


def test_check_ok(config: Path) -> None:
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout and "list gambling" in result.stdout
    assert "csam.example" in result.stderr  # allowing a statutory name is pointed out


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        (
            'block = ["adult"]',
            'block = ["adult", "casinos"]',
            "[groups.staff] block = \"casinos\": no [[lists]]",
        ),
        (
            "rate_limit_qps = 0",
            "rate_limit_qps = 0\nratelimit = 5",
            "[server] ratelimit = 5: is not a known key",
        ),
        (
            "rate_limit_qps = 0",
            "rate_limit_qps = 0\nudp_batch = 5000",
            "[server] udp_batch = 5000",
        ),
        ('allow = ["bbc.co.uk"', 'allow = ["iwf", "bbc.co.uk"', "\"iwf\": is a statutory category"),
        ('clients = ["127.0.2.0/24"]', 'clients = ["127.0.2.0/33"]', "not a CIDR network"),
        (
            "timeout_ms = 1500",
            'timeout_ms = "fast"',
            "[upstream] timeout_ms = \"fast\": must be an integer",
        ),
        (
            'blocked_answer = "null"',
            'blocked_answer = "sinkhole"',
            "must be null, nxdomain or the IP",
        ),
        ('"mon-fri 08:00-16:00"', '"mon-fri 8-4"', "schedule.social_networks"),
        (
            'allow_clients = ["127.0.0.0/9", "::1/128"]',
            'allow_clients = ["10.0.0.0/8", "::1/128"]',
            "not inside [server] allow_clients",
        ),
    ],
)
def test_check_names_section_key_value_rule(config: Path, old: str, new: str, needle: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    result = run("check", "--config", str(config))
    assert result.returncode == 1
    assert needle in result.stderr, result.stderr
    with pytest.raises(ConfigError):
        load_config(config)


def test_check_missing_list(config: Path) -> None:
    (config.parent / "lists" / "adult.txt").unlink()
    result = run("check", "--config", str(config))
    assert result.returncode == 1 and "adult.txt" in result.stderr


def test_explain_blocked_for_client(config: Path) -> None:
    result = run("explain", "--config", str(config), "www.casino.example", "--client", "127.0.1.3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "group pupils" in out and "verdict: blocked" in out and "category: gambling" in out
    assert "gambling.txt line 2" in out and "casino.example" in out


def test_explain_every_group_json(config: Path) -> None:
    result = run("explain", "--config", str(config), "casino.example", "--json")
    data = json.loads(result.stdout)
    verdicts = {item["group"]: item["verdict"]["kind"] for item in data}
    assert verdicts == {"pupils": "blocked", "staff": "resolved"}


def test_explain_statutory_and_safesearch(config: Path) -> None:
    out = run("explain", "--config", str(config), "csam.example", "--client", "127.0.1.3").stdout
    assert "verdict: blocked" in out and "category: iwf" in out and "statutory" in out
    out = run("explain", "--config", str(config), "www.google.com", "--client", "127.0.1.3").stdout
    assert "verdict: rewritten" in out and "forcesafesearch.google.com" in out
    out = run(
        "explain", "--config", str(config), "x.com", "--type", "HTTPS", "--client", "127.0.1.3"
    ).stdout
    assert "verdict: filtered" in out and "block_ech" in out
    out = run("explain", "--config", str(config), "x.com", "--client", "127.200.0.1").stdout
    assert "verdict: refused" in out


def test_help_for_every_command() -> None:
    for command in ("serve", "check", "explain", "selftest"):
        assert run(command, "--help").returncode == 0


def test_serve_sighup_reload_and_sigterm(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            while b"ready" not in (line := proc.stderr.readline()):
                assert line, "server exited before it was ready"
            assert str(ask(port, "casino.example", "A", "127.0.2.1").rr[0].rdata) == "192.0.2.1"
            text = path.read_text()
            path.write_text(text.replace('block = ["adult"]', 'block = ["adult", "gambling"]'))
            proc.send_signal(signal.SIGHUP)
            while b"reloaded" not in (line := proc.stderr.readline()):
                assert line, "server exited during reload"
            assert str(ask(port, "casino.example", "A", "127.0.2.1").rr[0].rdata) == "0.0.0.0"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            assert proc.stdout is not None and proc.stdout.read() == b""  # nothing on stdout
        finally:
            stop_process(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


_IMPORTS_OF_SERVE = """
import asyncio, sys
from pathlib import Path
from agent.dns.cli import build_parser
from agent.dns.commands.serve import reporter_for
from agent.dns.config import load_config
from agent.dns.service import Service

path = Path(sys.argv[1])
build_parser(["serve", "--config", str(path)])


async def main() -> None:
    assert reporter_for(load_config(path).report) is None
    service = Service(path)
    await service.start()
    await service.stop()


asyncio.run(main())
heavy = ("cryptography", "paho", "prometheus_client", "dnslib", "agent.report", "common.wire",
         "common.beacon_statement", "agent.enrolment_client", "common.identity", "urllib.request")
print(" ".join(sorted(m for m in sys.modules if m.startswith(heavy))))
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", set()),
        # prometheus_client's exposition module imports urllib.request itself
        ('[server]\nmetrics = "127.0.0.1:{port}"\n', {"prometheus_client", "urllib"}),
    ],
)
def test_serve_imports_only_the_libraries_its_config_uses(
    tmp_path: Path, extra: str, expected: set[str]
) -> None:
    # Memory: a filter without [report], [beacon] or metrics carries none of their libraries
    # (docs/dns.md "Memory: what is imported when").
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port())
        if extra:  # metrics goes in the existing [server] table
            text = path.read_text()
            line = extra.splitlines()[1].format(port=free_dns_port())
            path.write_text(text.replace("[server]\n", f"[server]\n{line}\n", 1))
        done = subprocess.run(
            [sys.executable, "-c", _IMPORTS_OF_SERVE, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        top = {name.split(".")[0] for name in done.stdout.split()}
        assert top == expected, done.stdout
