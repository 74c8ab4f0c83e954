"""hedgerow-dns check as the network manager runs it: every problem at once (config and lists),
a file Windows Notepad saved with a byte-order mark, the line numbers of a list's bad lines,
values shown as TOML writes them, and `serve` naming an address already in use and its use."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dns_support import free_dns_port, write_config
from tests.test_dns_cli import run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port())


def edit(config: Path, *pairs: tuple[str, str]) -> None:
    text = config.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    config.write_text(text)


def problems_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hedgerow-dns check: ")]


def test_every_problem_in_every_section_at_once(config: Path) -> None:
    edit(
        config,
        ("rate_limit_qps = 0", "rate_limit_qps = -1\nratelimit = 5"),  # two in [server]
        ("timeout_ms = 1500", 'timeout_ms = "fast"'),
        ('block = ["adult"]', 'block = ["adult", "casinos"]'),
        ('"mon-fri 08:00-16:00"', '"mon-fri 8-4"'),
        ('blocked_answer = "null"', 'blocked_answer = "sinkhole"'),
    )
    result = run("check", "--config", str(config))
    assert result.returncode == 1
    found = problems_of(result.stderr)
    needles = [
        "[server] rate_limit_qps = -1: must be at least 0",
        "[server] ratelimit = 5: is not a known key",
        '[upstream] timeout_ms = "fast": must be an integer',
        '[groups.staff] block = "casinos": no [[lists]] entry provides category "casinos"',
        '[groups.pupils] schedule.social_networks = "mon-fri 8-4": "mon-fri 8-4" is not',
        '[default] blocked_answer = "sinkhole": must be null, nxdomain',
    ]
    for needle in needles:
        assert sum(needle in line for line in found) == 1, (needle, result.stderr)
    assert len(found) == len(needles), result.stderr
    assert f"{config}: {len(needles)} problem(s)" in result.stderr
    assert result.stdout == ""


def test_a_broken_list_entry_keeps_its_number_and_raises_nothing_after_it(config: Path) -> None:
    # The first [[lists]] entry is cut for its bad source: the fourth must still be called #4,
    # and the groups that block "gambling" must not be told no list provides it.
    edit(config, ('source = "', 'source = 5\nx = "'), ("statutory = true", 'statutory = "yes"'))
    result = run("check", "--config", str(config))
    found = problems_of(result.stderr)
    assert any("[lists #1] source = 5: must be a string" in line for line in found), found
    assert any('[lists #4] statutory = "yes": must be true or false' in line for line in found)
    assert len(found) == 2, result.stderr


def test_config_and_list_problems_together(config: Path) -> None:
    edit(config, ("rate_limit_qps = 0", "rate_limit_qps = 0\nx = 1"))
    (config.parent / "lists" / "adult.txt").unlink()
    (config.parent / "lists" / "gambling.txt").write_text("")
    result = run("check", "--config", str(config))
    found = problems_of(result.stderr)
    assert any("[server] x = 1: is not a known key" in line for line in found)
    assert any("adult.txt" in line for line in found)
    assert any("gambling.txt: is empty" in line for line in found)
    assert len(found) == 3, result.stderr


def test_a_toml_syntax_error_is_one_problem(config: Path) -> None:
    config.write_text(config.read_text() + "\n[server\n")
    result = run("check", "--config", str(config))
    assert result.returncode == 1
    assert len(problems_of(result.stderr)) == 1 and "not valid TOML" in result.stderr


def test_a_byte_order_mark_is_accepted(config: Path) -> None:
    config.write_bytes(b"\xef\xbb\xbf" + config.read_text().replace("\n", "\r\n").encode())
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout


def test_invalid_lines_of_a_list_are_numbered(config: Path) -> None:
    lines = ["casino.example", "bad..name", "good.example", "-bad-.example!", "x" * 70 + ".com"]
    lines += [f"ok{i}.example" for i in range(20)] + [f"bad{i}..example" for i in range(8)]
    (config.parent / "lists" / "gambling.txt").write_text("\n".join(lines) + "\n")
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("list gambling:"))
    assert "11 invalid (invalid lines 2, 4, 5, 26, 27 and 6 more)" in line, line


def test_an_unparseable_list_names_its_first_bad_lines(config: Path) -> None:
    html = "<html>\n<body>\n<p>not a list</p>\n</body>\n</html>\ncasino.example\n"
    (config.parent / "lists" / "gambling.txt").write_text(html)
    result = run("check", "--config", str(config))
    assert result.returncode == 1
    (problem,) = problems_of(result.stderr)
    assert "gambling.txt: unparseable" in problem
    assert re.search(r"invalid lines 1, 2, 3, 4, 5$", problem), problem


def test_messages_show_toml_values_not_python(config: Path) -> None:
    edit(
        config,
        (
            'schedule = { social_networks = "mon-fri 08:00-16:00" }',
            'schedule = { social_networks = "mon-fri 08:00-16:00", gambling = ["mon"] }',
        ),
        ('clients = ["127.0.2.0/24"]', 'clients = ["127.0.1.0/24"]'),
    )
    result = run("check", "--config", str(config))
    found = problems_of(result.stderr)
    text = "\n".join(found)
    assert '[groups.pupils] schedule.gambling = ["mon"]: must be a string' in text, text
    assert '[groups.staff] clients = "127.0.1.0/24": this range is also in [groups.pupils]' in text
    assert "'" not in text and "None" not in text, text


CLI = [sys.executable, "-m", "agent.dns.cli"]


def serve_exits(config: Path) -> subprocess.CompletedProcess[str]:
    """Run the real `hedgerow-dns serve`, which must give up at once."""
    return subprocess.run(
        [*CLI, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_a_dns_address_in_use_is_named(tmp_path: Path, kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, ["127.0.0.1:5353"], port)
        result = serve_exits(config)
    assert result.returncode == 1
    transport = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
    assert (
        f"cannot listen: DNS ({transport}, [server] listen) on 127.0.0.1:{port}: "
        "Address already in use" in result.stderr
    ), result.stderr
    assert "Errno" not in result.stderr


def test_a_metrics_address_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        metrics = holder.getsockname()[1]
        config = write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port())
        edit(config, ("rate_limit_qps = 0", f'rate_limit_qps = 0\nmetrics = "127.0.0.1:{metrics}"'))
        result = serve_exits(config)
    assert result.returncode == 1
    assert (
        f"cannot listen: metrics ([server] metrics) on 127.0.0.1:{metrics}: "
        "Address already in use" in result.stderr
    ), result.stderr
