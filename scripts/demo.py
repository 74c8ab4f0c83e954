"""make demo: the whole system on one machine, on embedded defaults.

A Mosquitto broker and `hedgerow-hub serve` (its metrics on a free port, never the default
9154, which something else may hold); `hedgerow-dns` on a free loopback port with demo lists and
a local fake upstream, enrolled with the hub as a sinkhole. It shows blocked, allowed, SafeSearch
and anti-bypass answers with dig, then the alert the hub raised from the filter's sealed report.
Then a pupil laptop (`hedgerow-agent`, scripts/demo_agent.py) proves it is on site by the Pi's
signed beacon, goes off site when the Pi stops and still blocks by the school's policy, and
reports a concern; the hub raises offsite_use and concern alerts. Then it stops everything it
started (by PID). With --keep it waits for Ctrl-C so you can try the
printed commands. Nothing leaves this machine: the upstream is a fake on 127.0.0.1 answering
documentation addresses (192.0.2.x, 2001:db8::x).
"""

from __future__ import annotations

import argparse
import contextlib
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import demo_agent
import demo_hub
import dnslib  # the demo's fake upstream is a test double, not part of hedgerow-dns

ROOT = Path(__file__).resolve().parent.parent
PUPIL, STAFF, OUTSIDER = "127.0.1.10", "127.0.2.10", "127.200.0.1"
SAFE = {
    "forcesafesearch.google.com": "216.239.38.120",
    "restrict.youtube.com": "216.239.38.120",
    "strict.bing.com": "204.79.197.220",
    "safe.duckduckgo.com": "52.142.124.215",
}
LISTS = {
    "gambling.txt": "# demo gambling list (plain domains)\ncasino.example\nbets.example\n",
    "adult.txt": "# demo adult list (hosts format)\n0.0.0.0 adult.example\n",
    "social.txt": "! demo social list (adblock)\n||social.example^\n@@||school.social.example^\n",
}


def fake_upstream_answer(data: bytes) -> bytes:
    """Documentation addresses for every A/AAAA; real-looking SafeSearch targets."""
    request = dnslib.DNSRecord.parse(data)
    reply = request.reply()
    name = str(request.q.qname).rstrip(".").lower()
    if request.q.qtype == dnslib.QTYPE.A:
        address = SAFE.get(name, f"192.0.2.{sum(name.encode()) % 200 + 1}")
        reply.add_answer(
            dnslib.RR(request.q.qname, dnslib.QTYPE.A, rdata=dnslib.A(address), ttl=300)
        )
    elif request.q.qtype == dnslib.QTYPE.AAAA:
        address = f"2001:db8::{sum(name.encode()) % 200 + 1:x}"
        reply.add_answer(
            dnslib.RR(request.q.qname, dnslib.QTYPE.AAAA, rdata=dnslib.AAAA(address), ttl=300)
        )
    return bytes(reply.pack())


@contextmanager
def fake_upstream() -> Iterator[int]:
    """A UDP DNS server on 127.0.0.1 in a thread; yields its port."""
    stop = threading.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve() -> None:
        while not stop.is_set():
            if select.select([sock], [], [], 0.1)[0]:
                data, peer = sock.recvfrom(65535)
                with contextlib.suppress(dnslib.DNSError):
                    sock.sendto(fake_upstream_answer(data), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 a moment ago."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def write_demo_config(directory: Path, port: int, upstream_port: int, broker_url: str) -> Path:
    """Demo lists and a hedgerow-dns.toml with a pupils and a staff group."""
    for name, text in LISTS.items():
        (directory / name).write_text(text)
    config = directory / "hedgerow-dns.toml"
    config.write_text(
        f"""[server]
listen = ["127.0.0.1:{port}"]
allow_clients = ["127.0.0.0/9"]
list_cache_dir = "{directory / "cache"}"

[upstream]
servers = ["127.0.0.1:{upstream_port}"]   # the local fake upstream
timeout_ms = 1000

[[lists]]
category = "gambling"
source = "{directory / "gambling.txt"}"
[[lists]]
category = "adult"
source = "{directory / "adult.txt"}"
[[lists]]
category = "social_networks"
source = "{directory / "social.txt"}"

[groups.pupils]
clients = ["127.0.1.0/24"]
block = ["gambling", "adult", "social_networks"]
allow = ["bets.example"]
safesearch = true
block_ech = true

[groups.staff]
clients = ["127.0.2.0/24"]
block = ["adult"]

[default]
group = "pupils"

[report]                      # sealed summaries to the hub; adult attempts reported at once
hub = "{broker_url}"
identity = "{directory / "dns-identity"}"
interval_s = 10
immediate = ["adult"]

[beacon]
site = "{demo_hub.SITE}"
"""
    )
    return config


@contextmanager
def hedgerow_dns(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `hedgerow-dns serve` until the block ends; stop it by its PID."""
    command = [sys.executable, "-m", "agent.dns.cli", "serve", "--config", str(config)]
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        for line in iter(proc.stderr.readline, b""):
            if b"ready" in line:
                break
        else:
            raise SystemExit("hedgerow-dns did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def show(port: int) -> None:
    """Run the interesting dig commands and print what they answer."""
    cases = [
        ("pupil asks for a gambling site: blocked", PUPIL, "casino.example"),
        ("staff ask for the same site: allowed", STAFF, "casino.example"),
        ("pupil asks for an allowlisted name", PUPIL, "bets.example"),
        (
            "pupil tries an adult site: blocked, and reported to the hub at once",
            PUPIL,
            "adult.example",
        ),
        ("pupil searches Google: SafeSearch CNAME", PUPIL, "www.google.com"),
        (
            "pupil's Firefox checks for DoH: NXDOMAIN keeps it on school DNS",
            PUPIL,
            "use-application-dns.net",
        ),
        ("a stranger asks: REFUSED (never an open resolver)", OUTSIDER, "example.com"),
    ]
    for title, source, name in cases:
        command = [
            "dig",
            "@127.0.0.1",
            "-p",
            str(port),
            "-b",
            source,
            name,
            "+noall",
            "+comments",
            "+answer",
        ]
        print(f"\n== {title}\n$ {' '.join(command)}")
        out = subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
        for line in out.splitlines():
            if "status:" in line or (line and not line.startswith(";")):
                print("  " + line.strip())


def laptop(config: Path, port: int, hub_config: Path, pi: ExitStack) -> None:
    """The pupil laptop: on site by the Pi's signed beacon, then off site, still filtered."""
    print("\n== a pupil laptop: hedgerow-agent proves it is on site by the Pi's signed beacon")
    demo_agent.wait_for("on_site", lambda: demo_agent.status(config).get("site_state") == "on_site")
    print(f"$ hedgerow-agent status --config {config}")
    print(demo_agent.agent_cli(config, "status").rstrip())
    print("\n== the laptop goes home (the Pi no longer answers): off site, filtering itself")
    pi.close()  # stops hedgerow-dns
    demo_agent.wait_for(
        "off_site", lambda: demo_agent.status(config).get("site_state") == "off_site"
    )
    demo_agent.wait_for(
        "the policy's list", lambda: "0.0.0.0" in dig_short(port, "adult-site.example")
    )
    print(f"$ dig @127.0.0.1 -p {port} adult-site.example +short")
    print("  " + dig_short(port, "adult-site.example"))
    demo_agent.wait_for(
        "offsite_use", lambda: bool(demo_agent.alerts_of(hub_config, "offsite_use"))
    )
    print("\n== a pupil reports something upsetting; the DSL gets an alert")
    print(f"$ hedgerow-agent report-concern --config {config} 'someone sent me a horrible video'")
    print(
        "  "
        + demo_agent.agent_cli(config, "report-concern", "someone sent me a horrible video").strip()
    )
    demo_agent.wait_for("concern", lambda: bool(demo_agent.alerts_of(hub_config, "concern")))
    print(f"$ hedgerow-hub alerts --config {hub_config}")
    print(demo_hub.hub_cli("alerts", "--config", str(hub_config)).rstrip())


def dig_short(port: int, name: str) -> str:
    """dig +short through the laptop's filter."""
    command = ["dig", "@127.0.0.1", "-p", str(port), name, "+short", "+time=2", "+tries=1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()


def main() -> int:
    """Start, show, stop (or wait with --keep)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    if shutil.which("dig") is None:
        raise SystemExit("demo needs dig (apt install bind9-dnsutils)")
    with tempfile.TemporaryDirectory(prefix="hedgerow-demo-") as tmp:
        directory = Path(tmp)
        port = free_port()
        with (
            demo_hub.broker(directory) as broker_url,
            fake_upstream() as upstream_port,
            demo_agent.list_server() as list_url,
        ):
            hub_config = demo_hub.init_hub(directory, broker_url)
            metrics_port = free_port()
            with open(hub_config, "a", encoding="utf-8") as handle:
                handle.write(f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
            demo_agent.add_laptop_policy(hub_config, list_url)
            bundle = demo_hub.enrol_sinkhole(hub_config, broker_url, directory / "dns-1.bundle")
            config = write_demo_config(directory, port, upstream_port, broker_url)
            enrol = [sys.executable, "-m", "agent.dns.cli", "enroll", "--config", str(config)]
            subprocess.run(
                [*enrol, "--bundle", str(bundle)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL
            )
            bundle.unlink()  # a bundle holds the device's private key: delete it once imported
            laptop_bundle = demo_agent.enrol_laptop(hub_config, broker_url, directory)
            agent_port = free_port()
            agent_config = demo_agent.write_agent_config(
                directory, broker_url, port, upstream_port, agent_port
            )
            demo_agent.agent_cli(agent_config, "enroll", "--bundle", str(laptop_bundle))
            laptop_bundle.unlink()
            with demo_hub.hub_serve(hub_config, directory / "hub.log"), ExitStack() as pi:
                pi.enter_context(hedgerow_dns(config))
                print(f"broker {broker_url}; hub data {hub_config.parent}")
                print(f"hub metrics on http://127.0.0.1:{metrics_port}/metrics")
                print(f"hedgerow-dns is answering on 127.0.0.1:{port} (config {config})")
                show(port)
                print("\n== the hub opened the filter's sealed report and raised an alert")
                print(f"$ hedgerow-hub alerts --config {hub_config}")
                alerts = demo_hub.wait_for_alert(hub_config)
                if not alerts:
                    raise SystemExit("no alert reached the hub; see " + str(directory / "hub.log"))
                print(demo_hub.hub_cli("alerts", "--config", str(hub_config)).rstrip())
                with demo_agent.agent_run(agent_config, directory / "agent.log"):
                    laptop(agent_config, agent_port, hub_config, pi)
                    if args.keep:
                        print(f"\nTry: dig @127.0.0.1 -p {port} -b {PUPIL} www.youtube.com")
                        print(
                            f"     .venv/bin/hedgerow-dns explain --config {config} casino.example"
                        )
                        print(f"     .venv/bin/hedgerow-hub devices --config {hub_config}")
                        print(f"     .venv/bin/hedgerow-agent status --config {agent_config}")
                        print("Running; Ctrl-C to stop.")
                        with contextlib.suppress(KeyboardInterrupt):
                            signal.pause()
                    else:
                        print("\n(run `.venv/bin/python scripts/demo.py --keep` to try your own)")
    print("\nstopped everything the demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
