"""hedgerow-agent's config and command line: strict config errors, uninstall undoing a crashed
run's DNS settings, status and report-concern with no agent running."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.laptop.cli import main
from agent.laptop.config import load_config
from agent.laptop.resolver.resolvconf import ResolvConf
from common.errors import ConfigError


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(body, encoding="utf-8")
    return path


def base(tmp_path: Path) -> str:
    return (
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
        f'control_socket = "{tmp_path / "agent.sock"}"\n'
        f'[filter]\nresolv_conf = "{tmp_path / "resolv.conf"}"\nlisten = "127.0.0.1:53"\n'
    )


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.state_dir == Path("/var/lib/hedgerow/agent")
    assert config.site.beacon_servers == ("system",)
    assert config.filter.listen.text == "127.0.0.1:53"
    assert config.filter.manage_system_resolver is True
    assert config.report.interval_s == 300
    assert config.control_socket == Path("/var/lib/hedgerow/agent/agent.sock")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[agent]\nstate = 1\n", "[agent] state = 1: is not a known key"),
        ('[site]\nbeacon_servers = ["10.0.0.53"]\n', "[site] beacon_servers"),
        ("[site]\nbeacon_servers = []\n", "needs at least one server"),
        ('[filter]\nlisten = "localhost:53"\n', "[filter] listen"),
        ('[filter]\noffsite_upstreams = ["https://dns.example/"]\n', "offsite_upstreams"),
        ('[hub]\nurl = "http://hub:8883"\n', "must be mqtts://"),
        ("[report]\ninterval_s = 0\n", "[report] interval_s = 0"),
        ("[sniffer]\nenabled = 1\n", "[sniffer] enabled = 1"),
    ],
)
def test_a_bad_key_is_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, body))
    assert message in str(error.value)


def test_upstream_forms(tmp_path: Path) -> None:
    body = '[filter]\noffsite_upstreams = ["tls://dns.quad9.net", "tls://9.9.9.9#dns.quad9.net", "127.0.0.1:5353"]\n'
    config = load_config(write(tmp_path, body))
    assert len(config.filter.offsite_upstreams) == 3


def test_uninstall_undoes_a_crashed_runs_dns_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, base(tmp_path))
    resolv = tmp_path / "resolv.conf"
    original = b"# from DHCP\nnameserver 192.0.2.53\nsearch school.example\n"
    resolv.write_bytes(original)
    # A run that applied its setting and then died without restoring it.
    ResolvConf(resolv, state_dir=tmp_path / "state" / "resolver").apply("127.0.0.1", 53)
    assert b"127.0.0.1" in resolv.read_bytes()
    assert main(["uninstall", "--config", str(config)]) == 0
    assert resolv.read_bytes() == original
    assert "restored" in capsys.readouterr().out
    assert main(["uninstall", "--config", str(config), "--purge"]) == 0
    assert not (tmp_path / "state").exists()


def test_uninstall_purge_refuses_while_reports_wait(tmp_path: Path) -> None:
    config = write(tmp_path, base(tmp_path))
    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True)
    (spool / "00000000000000000001.env").write_bytes(b"x")
    assert main(["uninstall", "--config", str(config), "--purge"]) == 1
    assert spool.exists()
    assert main(["uninstall", "--config", str(config), "--purge", "--force"]) == 0
    assert not spool.exists()


def test_commands_say_plainly_when_the_agent_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, base(tmp_path))
    assert main(["status", "--config", str(config)]) == 1
    assert "not running" in capsys.readouterr().err
    assert main(["report-concern", "--config", str(config), "a horrible video"]) == 1
    assert "not running" in capsys.readouterr().err
    assert main(["flush", "--config", str(config)]) == 1


def test_check_says_not_enrolled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, base(tmp_path))
    assert main(["check", "--config", str(config)]) == 1
    assert "not enrolled" in capsys.readouterr().err
