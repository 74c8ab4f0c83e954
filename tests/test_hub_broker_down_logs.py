"""With the broker down the hub logs one clear line per change of state (down, then up again),
not paho's ERROR lines for every attempt. Against a real Mosquitto that is stopped and
started."""

from __future__ import annotations

import logging

import pytest

from hub.config import MqttConfig
from hub.mqtt import MqttConnection
from tests.services import free_port, mosquitto
from tests.waiting import wait_until


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_one_line_while_the_broker_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    connection = MqttConnection(MqttConfig(url=url), client_id="hub-down-test")
    connection.start()
    try:
        wait_until(lambda: connection.failed_attempts >= 3, timeout=30)
    finally:
        connection.stop()
    lines = _lines(caplog)
    assert lines == [f"cannot reach the broker at {url}; retrying every 1-30 s until it answers"]
    assert not any("Socket" in r.getMessage() for r in caplog.records)


def test_down_and_up_again_each_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with mosquitto() as broker:
        connection = MqttConnection(MqttConfig(url=broker.url), client_id="hub-flap-test")
        connection.start()
        try:
            assert connection.wait_ready(15)
            broker.stop()
            wait_until(lambda: not connection.connected.is_set(), timeout=15)
            attempts = connection.failed_attempts
            wait_until(lambda: connection.failed_attempts >= attempts + 2, timeout=30)
            broker.start()
            assert connection.wait_ready(60)
        finally:
            connection.stop()
    warnings = _lines(caplog)
    assert len(warnings) == 1 and warnings[0].startswith(f"disconnected from {broker.url}")
    connected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert len(connected) == 2
