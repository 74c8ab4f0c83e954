"""Where a device may send its reports: mqtts:// anywhere, plain mqtt:// only to loopback; the
laptop agent and the DNS filter apply the one rule (common/broker_url.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.laptop.config import parse_config
from common.broker_url import broker_url_problem
from common.errors import ConfigError


@pytest.mark.parametrize(
    "url",
    ["mqtts://hub.school.example:8883", "mqtts://10.0.0.5", "mqtt://127.0.0.1:1883",
     "mqtt://127.8.9.1:1883", "mqtt://[::1]:1883", "mqtt://localhost:1883"],
)  # fmt: skip
def test_accepted(url: str) -> None:
    assert broker_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtt://hub.school.example:1883", "only on loopback"),
        ("mqtt://10.0.0.5:1883", "only on loopback"),
        ("mqtt://[fe80::1]:1883", "only on loopback"),
        ("https://hub.school.example", "must be mqtts://"),
        ("mqtts://", "must be mqtts://"),
        ("mqtts://hub:99999", "bad port"),
    ],
)
def test_refused(url: str, why: str) -> None:
    problem = broker_url_problem(url)
    assert problem is not None and why in problem


def test_the_laptop_agent_refuses_plain_mqtt_off_loopback(tmp_path: Path) -> None:
    raw: dict[str, object] = {
        "agent": {"state_dir": str(tmp_path)},
        "hub": {"url": "mqtt://10.0.0.5:1883"},
    }
    with pytest.raises(ConfigError, match="only on loopback"):
        parse_config(raw, tmp_path / "agent.toml")
