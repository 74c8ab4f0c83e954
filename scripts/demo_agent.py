"""The laptop side of `make demo`: a pupil laptop enrolled from a bundle, `hedgerow-agent run`
on a free loopback port, on site while the demo Pi answers its signed beacon, off site once the
Pi stops, still filtering by the school's policy, and a concern reported to the DSL.

The demo agent leaves this machine's DNS settings alone (`manage_system_resolver = false`) and
runs no sniffer; docs/agent.md describes the real thing.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import demo_hub

ROOT = demo_hub.ROOT
LAPTOP_LIST = "adult-site.example\nadult.example\n"


@contextmanager
def list_server() -> Iterator[str]:
    """The school's list for laptops, over HTTP on loopback; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = LAPTOP_LIST.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/adult.txt"
    finally:
        server.shutdown()
        server.server_close()


def add_laptop_policy(hub_config: Path, list_url: str) -> None:
    """[[policy.lists]]: what the laptop's own filter blocks when it is off site."""
    with open(hub_config, "a", encoding="utf-8") as handle:
        handle.write(f'\n[[policy.lists]]\ncategory = "adult"\nsource = "{list_url}"\n')


def enrol_laptop(hub_config: Path, broker_url: str, directory: Path) -> Path:
    """A pupil laptop's agent config, enrolled from a bundle (after the Pi, so its signed
    policy carries the Pi's beacon key)."""
    bundle = directory / "lt-1.bundle"
    demo_hub.hub_cli(
        "enroll", "bundle", "--config", str(hub_config), "--device", "lt-1",
        "--class", "pupil-laptop", "--broker", broker_url, "--out", str(bundle),
    )  # fmt: skip
    return bundle


def write_agent_config(
    directory: Path, broker_url: str, pi_port: int, upstream_port: int, port: int
) -> Path:
    """agent.toml for the demo laptop."""
    config = directory / "agent.toml"
    config.write_text(
        f"""[agent]
state_dir = "{directory / "agent"}"
control_socket = "{directory / "agent.sock"}"
[hub]
url = "{broker_url}"
[site]
beacon_servers = ["127.0.0.1:{pi_port}"]   # the demo Pi (a real laptop: "system")
check_interval_s = 2
[filter]
listen = "127.0.0.1:{port}"
offsite_upstreams = ["127.0.0.1:{upstream_port}"]   # the demo's fake upstream
manage_system_resolver = false   # the demo leaves this machine's DNS alone
[report]
interval_s = 5
[sniffer]
enabled = false
"""
    )
    return config


def agent_cli(config: Path, *args: str) -> str:
    """Run hedgerow-agent; its output."""
    command = [sys.executable, "-m", "agent.laptop.cli", *args, "--config", str(config)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout


def status(config: Path) -> dict[str, object]:
    """`hedgerow-agent status --json`, or {} while it is not answering."""
    out = agent_cli(config, "status", "--json")
    try:
        doc = json.loads(out)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `check()`; exit loudly after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise SystemExit(f"the demo laptop never got there: {what}")


@contextmanager
def agent_run(config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`hedgerow-agent run` until the block ends; stopped by its PID."""
    command = [sys.executable, "-m", "agent.laptop.cli", "run", "--config", str(config)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        demo_hub._stop(proc)


def alerts_of(hub_config: Path, rule: str) -> list[dict[str, object]]:
    """The hub's open alerts of one rule."""
    out = demo_hub.hub_cli("alerts", "--config", str(hub_config), "--json")
    return [a for a in json.loads(out) if a.get("rule") == rule]
