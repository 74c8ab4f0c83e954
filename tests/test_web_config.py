"""[web] in hub.toml: TLS or loopback, refused clearly by load_config, check and serve."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from hub.config import WebConfig, parse_config
from tests.services import Mosquitto, daemon
from tests.waiting import wait_until
from tests.web_support import hub_cli, init_hub


def _web(tmp_path: Path, web: dict[str, object]) -> WebConfig:
    return parse_config({"hub": {"site": "s"}, "web": web}, tmp_path / "hub.toml").web


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:8080", "127.0.0.53:80", "localhost:8080", "[::1]:8080", "::1:8080"]
)
def test_plain_http_on_loopback_is_allowed(tmp_path: Path, listen: str) -> None:
    web = _web(tmp_path, {"listen": listen})
    assert web.tls is False


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "10.0.0.5:443", "hub.school:8080"])
def test_plain_http_elsewhere_is_refused(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match="plain HTTP is allowed only on loopback"):
        _web(tmp_path, {"listen": listen})


def test_tls_keys_and_limits(tmp_path: Path) -> None:
    web = _web(
        tmp_path,
        {
            "listen": "0.0.0.0:8443",
            "tls_cert": "cert.pem",
            "tls_key": "key.pem",
            "session_hours": 8,
            "idle_minutes": 20,
            "base_url": "https://hub.school",
        },
    )
    assert web.tls_cert == tmp_path / "cert.pem"
    assert web.session_hours == 8 and web.idle_minutes == 20
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        _web(tmp_path, {"listen": "0.0.0.0:8443", "tls_cert": "cert.pem"})
    with pytest.raises(ConfigError, match="base_url"):
        _web(tmp_path, {"base_url": "hub.school/alerts"})
    with pytest.raises(ConfigError, match="tls_certs"):
        _web(tmp_path, {"tls_certs": "x"})


def test_check_and_serve_refuse_plain_http_off_loopback(tmp_path: Path) -> None:
    config = init_hub(tmp_path / "hub", "mqtt://127.0.0.1:1883", 'listen = "0.0.0.0:8080"\n')
    check = hub_cli("check", "--config", str(config))
    assert check.returncode == 1
    assert "[web] listen" in check.stderr and "only on loopback" in check.stderr
    serve = hub_cli("serve", "--config", str(config))
    assert serve.returncode == 1 and "only on loopback" in serve.stderr


def test_serve_refuses_unreadable_tls_files(tmp_path: Path) -> None:
    web = 'listen = "127.0.0.1:8443"\ntls_cert = "missing.pem"\ntls_key = "missing.key"\n'
    config = init_hub(tmp_path / "hub", "mqtt://127.0.0.1:1883", web)
    serve = hub_cli("serve", "--config", str(config))
    assert serve.returncode == 1 and "cannot be loaded" in serve.stderr


def test_a_taken_port_costs_the_dashboard_not_ingest(tmp_path: Path, broker: Mosquitto) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = init_hub(tmp_path / "hub", broker.url, f'listen = "127.0.0.1:{port}"\n')
        log = tmp_path / "serve.log"
        with daemon(sys.executable, "-m", "hub.cli", "serve", "--config", str(config), log=log):
            wait_until(lambda: "hedgerow-hub serving" in log.read_text(), 60, what="serving")
            text = log.read_text()
            assert "the dashboard is not served on" in text
            assert "Traceback" not in text


def test_an_empty_listen_turns_the_dashboard_off(tmp_path: Path) -> None:
    web = _web(tmp_path, {"listen": ""})
    assert not web.enabled
    assert _web(tmp_path, {}).enabled
