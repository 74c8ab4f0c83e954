"""The hub side of `make demo`: a Mosquitto broker, `hedgerow-hub serve`, and enrolment of the
demo DNS filter as a sinkhole. Everything listens on 127.0.0.1 and is stopped by its PID.

The demo broker allows anonymous clients on loopback for brevity; the shipped broker
configuration (firmware-config/mosquitto/) uses TLS, per-device passwords and an ACL.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = "demo-school"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def hub_cli(*args: str) -> str:
    """Run hedgerow-hub and return its output; exit loudly if it fails."""
    command = [sys.executable, "-m", "hub.cli", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{result.stderr}")
    return result.stdout


@contextmanager
def broker(directory: Path) -> Iterator[str]:
    """Mosquitto on a free loopback port; yields its mqtt:// URL."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _port()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {directory}/\nuser root\n"
    )
    with open(directory / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        _stop(proc)


def init_hub(directory: Path, broker_url: str) -> Path:
    """`hedgerow-hub init` a data directory; returns its hub.toml."""
    data = directory / "hub"
    hub_cli("init", "--data", str(data), "--site", SITE, "--mqtt", broker_url)
    config = data / "hub.toml"
    with open(config, "a", encoding="utf-8") as handle:
        handle.write('\n[notify]\nfrom = "hedgerow@demo-school.example"\n')
    return config


def enrol_sinkhole(hub_config: Path, broker_url: str, out: Path) -> Path:
    """An offline enrolment bundle for the demo DNS filter (device dns-1)."""
    hub_cli(
        "enroll", "bundle", "--config", str(hub_config), "--device", "dns-1",
        "--class", "sinkhole", "--broker", broker_url, "--out", str(out),
    )  # fmt: skip
    return out


@contextmanager
def hub_serve(config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`hedgerow-hub serve` until the block ends."""
    command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        _stop(proc)


def wait_for_alert(config: Path, timeout: float = 30.0) -> list[dict[str, object]]:
    """Poll `hedgerow-hub alerts --json` until an alert appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alerts: list[dict[str, object]] = json.loads(
            hub_cli("alerts", "--config", str(config), "--json")
        )
        if alerts:
            return alerts
        time.sleep(0.5)
    return []
