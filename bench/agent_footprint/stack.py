"""Everything `hedgerow-agent run` needs, on loopback: a real Mosquitto, a hub data directory
and `hedgerow-hub serve` (so receipts come back and the spool drains as on a laptop), a fake
upstream (tests/dns_support.py), a laptop enrolled from a hub bundle; then the agent itself with
its sniffer child. Every process is ours and is stopped by its pid."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.agent_footprint.measure import children
from hub.cli import main as hub_main
from tests.dns_support import FakeUpstream, free_dns_port
from tests.hub_ingest_fixtures import make_hub, serving
from tests.services import mosquitto, stop_process
from tests.waiting import wait_until

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0
SNIFFER_MODULE = "agent.laptop.sniffer.child"


@dataclass(frozen=True)
class RunningAgent:
    """A running agent: its pid, its sniffer child's pid, its filter's address and log."""

    pid: int
    sniffer_pid: int
    listen: tuple[str, int]
    config: Path
    log: Path

    def sniffer_now(self) -> int:
        """The sniffer child's pid now: the agent restarts it on every network change (and
        once seconds after its start), so look again before each window."""
        kids = children(self.pid, SNIFFER_MODULE)
        if len(kids) != 1:
            raise RuntimeError(f"expected one sniffer child, found {kids}")
        return kids[0]


def agent_config(
    tmp: Path, broker_url: str, upstream: str, listen: tuple[str, int], interval_s: int
) -> str:
    """The agent's TOML: off site (the fake upstream answers the beacon name unsigned, so
    nothing leaves loopback), the OS resolver left alone (a shared machine), the sniffer on
    loopback, where the load runs."""
    host, port = listen
    return f"""
[agent]
state_dir = "{tmp / "agent"}"
control_socket = "{tmp / "agent.sock"}"
[hub]
url = "{broker_url}"
[site]
beacon_servers = ["{upstream}"]
[filter]
listen = "{host}:{port}"
offsite_upstreams = ["{upstream}"]
manage_system_resolver = false
[report]
interval_s = {interval_s}
[sniffer]
enabled = true
interface = "lo"
"""


def status(config: Path) -> dict[str, Any]:
    """`hedgerow-agent status --json`, or {} while it cannot answer."""
    out = subprocess.run(
        [f"{BIN}/hedgerow-agent", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        parsed = json.loads(out.stdout) if out.stdout.strip() else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _ready(config: Path) -> bool:
    now = status(config)
    return now.get("filter") == "active" and now.get("sniffer") == "running"


@contextmanager
def agent_stack(
    tmp: Path, interval_s: int, listen: tuple[str, int] | None = None
) -> Iterator[RunningAgent]:
    """Broker, hub, upstream and an enrolled, running agent whose sniffer is running, its
    filter on `listen` (default: a free port on 127.0.0.1)."""
    with ExitStack() as stack:
        broker = stack.enter_context(mosquitto())
        hub = make_hub(tmp, broker.url, None)
        bundle = tmp / "lt-1.bundle"
        args = ["enroll", "bundle", "--config", str(hub.path), "--device", "lt-1"]
        args += ["--class", "pupil-laptop", "--broker", broker.url, "--out", str(bundle)]
        if hub_main(args) != 0:
            raise RuntimeError("hedgerow-hub enroll bundle failed")
        upstream = stack.enter_context(FakeUpstream())
        address = listen if listen is not None else ("127.0.0.1", free_dns_port())
        config = tmp / "agent.toml"
        config.write_text(agent_config(tmp, broker.url, upstream.address, address, interval_s))
        enrol = [f"{BIN}/hedgerow-agent", "enroll", "--config", str(config)]
        subprocess.run([*enrol, "--bundle", str(bundle)], check=True, timeout=60)
        stack.enter_context(serving(hub))
        log = tmp / "agent.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [f"{BIN}/hedgerow-agent", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        stack.callback(stop_process, proc)
        try:
            wait_until(lambda: proc.poll() is not None or _ready(config), START_TIMEOUT_S, 0.5)
        except AssertionError as exc:
            raise RuntimeError(f"agent not ready: {status(config)}\n{log.read_text()[-3000:]}") from exc
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited {proc.returncode}: {log.read_text()[-3000:]}")
        # The agent also runs short-lived tools (loginctl, ip): pick the sniffer by its module.
        kids = children(proc.pid, SNIFFER_MODULE)
        if len(kids) != 1:
            raise RuntimeError(f"expected one sniffer child, found {kids}")
        yield RunningAgent(proc.pid, kids[0], address, config, log)
