"""End to end on loopback: `hedgerow-agent run` with a real Mosquitto, `hedgerow-hub serve`,
the school's `hedgerow-dns serve` answering the signed beacon, a list server and a fake
upstream. On site while the Pi answers the beacon; off site when it stops, filtering by the
policy's lists itself; fails closed with the upstreams dead; the hub hears the off-site use and
a concern as alerts; `status --json` says all of it.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.dns.cli import main as dns_main
from hub.cli import main as hub_main
from hub.config import HubConfig
from tests.dns_support import FakeUpstream, dig, free_dns_port, write_config
from tests.hub_ingest_fixtures import make_hub, query
from tests.services import Mosquitto, daemon, stop_process
from tests.waiting import wait_until

BIN = Path(sys.executable).parent


@contextmanager
def list_server(files: dict[str, str]) -> Iterator[str]:
    """A real HTTP server on loopback serving these lists; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def bundle(hub: HubConfig, broker: Mosquitto, device: str, device_class: str, out: Path) -> Path:
    args = ["enroll", "bundle", "--config", str(hub.path), "--device", device]
    assert hub_main([*args, "--class", device_class, "--broker", broker.url, "--out", str(out)]) == 0
    return out


def agent_status(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [f"{BIN}/hedgerow-agent", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(out.stdout) if out.stdout.strip() else {}


def alerts(hub: HubConfig, rule: str) -> list[tuple[Any, ...]]:
    return query(hub, "SELECT rule, severity, device, summary FROM alerts WHERE rule = ?", (rule,))


def test_the_laptop_agent_on_site_off_site_and_failing_closed(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with list_server({"adult.txt": "adult-site.example\n"}) as lists_url:
        hub = make_hub(tmp_path, broker.url, None)
        with open(hub.path, "a", encoding="utf-8") as handle:
            handle.write(
                f'\n[[policy.lists]]\ncategory = "adult"\nsource = "{lists_url}/adult.txt"\n'
            )
        # The school's Pi enrols first, so the laptop's policy carries its beacon key.
        pi_bundle = bundle(hub, broker, "dns-1", "sinkhole", tmp_path / "dns-1.bundle")
        lt_bundle = bundle(hub, broker, "lt-1", "pupil-laptop", tmp_path / "lt-1.bundle")
        pi_identity = tmp_path / "pi-identity"
        with FakeUpstream() as upstream, FakeUpstream() as offsite:
            pi_port = free_dns_port()
            extra = f'[beacon]\nsite = "cape-primary"\nidentity = "{pi_identity}"\n'
            extra += f'[report]\nhub = "{broker.url}"\nidentity = "{pi_identity}"\ninterval_s = 10\n'
            pi_config = write_config(tmp_path, [upstream.address], pi_port, extra=extra)
            assert dns_main(["enroll", "--config", str(pi_config), "--bundle", str(pi_bundle)]) == 0
            agent_port = free_dns_port()
            state = tmp_path / "agent"
            config = tmp_path / "agent.toml"
            config.write_text(
                f"""
[agent]
state_dir = "{state}"
control_socket = "{tmp_path / "agent.sock"}"
[hub]
url = "{broker.url}"
[site]
beacon_servers = ["127.0.0.1:{pi_port}"]
check_interval_s = 2
[filter]
listen = "127.0.0.1:{agent_port}"
offsite_upstreams = ["{offsite.address}"]
manage_system_resolver = false
timeout_ms = 300
[report]
interval_s = 3
[sniffer]
enabled = false
"""
            )
            enrol = [f"{BIN}/hedgerow-agent", "enroll", "--config", str(config)]
            subprocess.run([*enrol, "--bundle", str(lt_bundle)], check=True, timeout=60)
            check = subprocess.run(
                [f"{BIN}/hedgerow-agent", "check", "--config", str(config)], timeout=60
            )
            assert check.returncode == 0
            hub_log = tmp_path / "hub.log"
            with daemon(f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path), log=hub_log):
                wait_until(lambda: "hedgerow-hub serving" in hub_log.read_text(), what="the hub")
                pi = daemon(
                    f"{BIN}/hedgerow-dns", "serve", "--config", str(pi_config), log=tmp_path / "dns.log"
                )
                agent_log = tmp_path / "agent.log"
                with pi as pi_proc, daemon(
                    f"{BIN}/hedgerow-agent", "run", "--config", str(config), log=agent_log
                ):
                    # On site: the Pi's signed beacon; everything forwarded to the Pi.
                    wait_until(
                        lambda: agent_status(config).get("site_state") == "on_site",
                        timeout=30,
                        what="on_site: " + agent_log.read_text()[-2000:],
                    )
                    status = agent_status(config)
                    assert status["upstreams"] == [f"127.0.0.1:{pi_port}"]
                    assert status["filter"] == "active" and status["group"] == "pupils"
                    # Off site: the Pi is gone, so nothing signs the beacon.
                    stop_process(pi_proc)
                    wait_until(
                        lambda: agent_status(config).get("site_state") == "off_site",
                        timeout=10,
                        what="off_site within 10 s",
                    )
                    # The policy's list blocks it here too; the rest goes to the off-site upstream.
                    wait_until(
                        lambda: "0.0.0.0" in dig(agent_port, "adult-site.example", "+short"),
                        what="the policy's list to block off site",
                    )
                    assert "192.0.2" in dig(agent_port, "www.bbc.co.uk", "+short")
                    # The hub raises offsite_use from the site_state event.
                    wait_until(lambda: bool(alerts(hub, "offsite_use")), timeout=60, what="offsite_use")
                    assert alerts(hub, "offsite_use")[0][2] == "lt-1"
                    # Upstream dead: blocked stays blocked, the rest is SERVFAIL.
                    offsite.mode = "silent"
                    assert "0.0.0.0" in dig(agent_port, "adult-site.example", "+short")
                    assert "SERVFAIL" in dig(agent_port, "never-asked-before.example")
                    # A concern reaches the DSL as an alert.
                    concern = subprocess.run(
                        [f"{BIN}/hedgerow-agent", "report-concern", "--config", str(config),
                         "someone sent me a horrible video"],
                        capture_output=True, text=True, timeout=30,
                    )
                    assert concern.returncode == 0, concern.stderr
                    wait_until(lambda: bool(alerts(hub, "concern")), timeout=60, what="concern alert")
                    assert int(alerts(hub, "concern")[0][1]) == 4
                    status = agent_status(config)
                    for key in ("device", "group", "site_state", "since", "policy_version", "filter",
                                "system_resolver", "spool_depth", "oldest_unreceipted",
                                "last_publish", "broker", "sniffer", "health"):
                        assert key in status, key
                    assert status["broker"] == "connected" and status["policy_version"] >= 1
                    assert status["sniffer"] == "off in the config"
                # Stopped: status says so from the status file.
                last = agent_status(config)
                assert last.get("running") is False
        rejected = query(hub, "SELECT COUNT(*) FROM rejections")[0][0]
        assert rejected == 0, hub_log.read_text()[-3000:]
