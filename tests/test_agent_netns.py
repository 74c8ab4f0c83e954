"""The laptop agent end to end in network namespaces (issue 12, "Tests").

A school network (the Pi: `hedgerow-dns serve` with its signed beacon), a home network (dnsmasq,
with a forger answering the beacon zone), an internet namespace with Mosquitto, `hedgerow-hub
serve`, the policy's list server and the off-site upstream, and a laptop namespace moved between
school and home (tests/netns_support.py draws it). Two `hedgerow-agent run`s, a pupil laptop and
a staff laptop, run inside the laptop namespace, each managing its own temp resolv.conf (what
DHCP gave) with `beacon_servers = ["system"]`.

The product accepts plain mqtt:// and http:// list URLs only on loopback, so the laptop and the
Pi reach the broker and the list server at 127.0.0.1 through a TCP relay in their own namespace
that forwards over the routed school or home network (netns_support.RELAY_CHILD).

The tests share that world (built once for the module). They run in any order (pytest-randomly):
each takes the laptop where it needs it (World.go) and puts back what it changed.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.dns.cli import main as dns_main
from common.wire.signed import sign_message
from common.wire.signing import SigningKey
from common.wire.topics import device_policy
from hub.cli import main as hub_main
from hub.config import HubConfig
from hub.keys import HubKeys
from tests.hub_ingest_fixtures import SITE, make_hub, query
from tests.netns_support import (
    BIN,
    BROKER_HOST,
    BROKER_PORT,
    FORGER_CHILD,
    HOME_ROUTER,
    LISTS_PORT,
    OFFSITE_HOST,
    PI,
    RELAY_CHILD,
    RETAIN_CHILD,
    ROAMING,
    UPSTREAM_CHILD,
    Networks,
    NsProcess,
    dnsmasq_command,
    mosquitto_conf,
    python_child,
    run_in,
)
from tests.waiting import wait_until

# Through the relays (netns_support.RELAY_CHILD) in the laptop's and the school's namespaces.
BROKER_URL = f"mqtt://127.0.0.1:{BROKER_PORT}"
BLOCKED = "adult-site.example"
URGENT_EVENTS = {"site_state", "blocked", "bypass", "tamper", "concern", "spool_dropped"}
BLOCK_SIZE = 1024  # common/wire/sequence.py: a crash skips at most the rest of one block

PI_CONFIG = """
[server]
listen = ["{pi}:53"]
allow_clients = ["10.0.0.0/8"]
list_cache_dir = "{root}/pi-cache"
[upstream]
servers = ["127.0.0.1:{upstream}"]
timeout_ms = 1000
[[lists]]
category = "adult"
source = "{root}/pi-adult.txt"
[groups.pupils]
clients = ["10.0.0.0/8"]
block = ["adult"]
[default]
group = "pupils"
blocked_answer = "null"
[beacon]
site = "{site}"
identity = "{identity}"
[report]
hub = "{broker}"
identity = "{identity}"
interval_s = 10
"""

AGENT_CONFIG = """
[agent]
state_dir = "{state}"
control_socket = "{root}/{name}.sock"
[hub]
url = "{broker}"
[site]
beacon_servers = ["system"]
check_interval_s = 2
[filter]
listen = "{listen}:53"
offsite_upstreams = ["{offsite}"]
manage_system_resolver = true
resolv_conf = "{resolv}"
timeout_ms = 300
captive_max_s = 10
[report]
interval_s = 3
[sniffer]
enabled = false
"""


@dataclass
class Laptop:
    """One enrolled agent in the laptop namespace: its config, resolv.conf and process."""

    name: str
    device_class: str
    listen: str
    config: Path
    resolv: Path
    log: Path
    proc: NsProcess | None = None


@dataclass
class World:
    """Everything the tests share."""

    root: Path
    nets: Networks
    hub: HubConfig
    laptops: dict[str, Laptop]
    procs: dict[str, NsProcess] = field(default_factory=dict)
    offsite_port: int = 0

    def command(self, laptop: Laptop, *args: str, timeout: float = 40) -> Any:
        """`hedgerow-agent ARGS --config F` inside the laptop namespace."""
        return run_in(
            self.nets.laptop,
            f"{BIN}/hedgerow-agent",
            args[0],
            "--config",
            str(laptop.config),
            *args[1:],
            timeout=timeout,
        )

    def status(self, laptop: Laptop) -> dict[str, Any]:
        """`status --json` through `ip netns exec` ({} if it said nothing)."""
        out = self.command(laptop, "status", "--json").stdout
        return json.loads(out) if out.strip() else {}

    def dig(self, laptop: Laptop, *args: str) -> str:
        """The real dig, in the laptop namespace, at the agent's filter."""
        done = run_in(self.nets.laptop, "dig", f"@{laptop.listen}", "+tries=1", "+time=3", *args)
        return done.stdout

    def move(self, where: str) -> None:
        """Take the laptop (both agents) to "school" or "home"."""
        self.nets.move(where, [lt.resolv for lt in self.laptops.values()])

    def go(self, where: str) -> None:
        """Be at "school" (on site) or "home" (off site), moving only if elsewhere."""
        if self.nets.where != where:
            self.move(where)
        self.wait_state("on_site" if where == "school" else "off_site", timeout=30)

    def wait_state(self, state: str, timeout: float = 10, laptops: list[str] | None = None) -> None:
        """Every laptop (or those named) in this site state within `timeout` seconds."""
        for name in laptops or list(self.laptops):
            laptop = self.laptops[name]
            wait_until(
                self.status_is(laptop, "site_state", state),
                timeout=timeout,
                interval=0.2,
                what=self.shown(laptop, state),
            )

    def shown(self, laptop: Laptop, state: str) -> Callable[[], str]:
        """For wait_until's message, at the failure: the status and the last log lines (debug
        lines left out)."""

        def text() -> str:
            lines = laptop.log.read_text().splitlines()
            tail = "\n".join([ln for ln in lines if not ln.startswith("DEBUG")][-25:])
            return f"{laptop.name} {state}: {self.status(laptop)}\n{tail}"

        return text

    def start_agent(self, laptop: Laptop) -> None:
        """`hedgerow-agent run` inside the laptop namespace, answering status."""
        laptop.proc = NsProcess(
            self.nets.laptop,
            [f"{BIN}/hedgerow-agent", "run", "--config", str(laptop.config)],
            laptop.log,
        )
        wait_until(
            lambda: self.status(laptop).get("running") is True,
            timeout=30,
            interval=0.2,
            what=f"{laptop.name} running: {laptop.log.read_text()[-2000:]}",
        )

    def start_broker(self) -> None:
        """Mosquitto in the net namespace (again, on the same port and persistence)."""
        conf = mosquitto_conf(self.root / "mqtt")
        broker = NsProcess(self.nets.net, ["mosquitto", "-c", str(conf)], self.root / "mqtt.log")
        self.procs["broker"] = broker
        wait_until(
            lambda: tcp_open(self.nets.net, "127.0.0.1", BROKER_PORT),
            timeout=15,
            what="the broker, from the laptop: " + broker.text()[-1000:],
        )

    def status_is(self, laptop: Laptop, key: str, value: object) -> Callable[[], bool]:
        """For wait_until: this laptop's status has `key` equal to `value`."""
        return lambda: self.status(laptop).get(key) == value

    def new_event(self, device: str, kind: str, after_id: int) -> Callable[[], bool]:
        """For wait_until: an event of this type stored after report `after_id`."""
        return lambda: any(e[0] > after_id for e in self.events(device, kind))

    def alert_since(self, rule: str, device: str, at_ms: int) -> Callable[[], bool]:
        """For wait_until: an alert of this rule for the device raised or updated at or after
        `at_ms` (the hub keeps one open alert per key and updates its last_seen)."""
        return lambda: any(int(a[3]) >= at_ms for a in self.alerts(rule, device))

    def reports(self, device: str) -> list[tuple[int, int, str]]:
        """(id, seq, body) of this device's stored reports, in arrival order."""
        rows = query(
            self.hub,
            "SELECT id, seq, body FROM reports WHERE device = ? ORDER BY id",
            (device,),
        )
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    def events(self, device: str, kind: str) -> list[tuple[int, int, dict[str, Any]]]:
        """(id, received_ms, payload) of this device's events of one type."""
        rows = query(
            self.hub,
            "SELECT id, received_ms, body FROM reports WHERE device = ? AND kind = 'event' "
            "ORDER BY id",
            (device,),
        )
        found = []
        for row in rows:
            body = json.loads(str(row[2]))
            if body.get("type") == kind:
                found.append((int(row[0]), int(row[1]), body))
        return found

    def alerts(self, rule: str, device: str) -> list[tuple[Any, ...]]:
        """(severity, first_seen_ms, summary, last_seen_ms) of the hub's alerts of a rule for a device."""
        return query(
            self.hub,
            "SELECT severity, first_seen_ms, summary, last_seen_ms FROM alerts WHERE rule = ? AND device = ? "
            "ORDER BY id",
            (rule, device),
        )


def tcp_open(ns: str, host: str, port: int) -> bool:
    """True if something in namespace `ns` can open a TCP connection to host:port."""
    code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
    return run_in(ns, *python_child(code, host, str(port))).returncode == 0


def bundle(hub: HubConfig, device: str, device_class: str, out: Path) -> Path:
    """An enrolment bundle from the hub's own CLI."""
    args = ["enroll", "bundle", "--config", str(hub.path), "--device", device]
    assert (
        hub_main([*args, "--class", device_class, "--broker", BROKER_URL, "--out", str(out)]) == 0
    )
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The whole school/home/internet/laptop world, torn down (namespaces deleted) even when
    building it fails half way."""
    root = tmp_path_factory.mktemp("netns")
    nets = Networks()
    procs: dict[str, NsProcess] = {}
    laptops: dict[str, Laptop] = {}
    try:
        nets.build()
        world = _build(root, nets, procs, laptops)
        yield world
    finally:
        try:
            children = [lt.proc for lt in laptops.values() if lt.proc is not None]
            for proc in [*children, *reversed(list(procs.values()))]:
                proc.stop()
        finally:
            nets.delete()  # also when a stop failed: never leave a namespace behind


def _build(
    root: Path, nets: Networks, procs: dict[str, NsProcess], laptops: dict[str, Laptop]
) -> World:
    # The internet: the broker, the list server and the off-site upstream.
    lists = root / "lists"
    lists.mkdir()
    (lists / "adult.txt").write_text(f"{BLOCKED}\n")
    hub = make_hub(root, BROKER_URL, None)
    with open(hub.path, "a", encoding="utf-8") as handle:
        handle.write(
            f'\n[[policy.lists]]\ncategory = "adult"\n'
            f'source = "http://127.0.0.1:{LISTS_PORT}/adult.txt"\n'
        )
    world = World(root, nets, hub, laptops, procs)
    world.start_broker()
    procs["laptop-relay"] = NsProcess(
        nets.laptop,
        python_child(
            RELAY_CHILD,
            ROAMING,
            f"{BROKER_PORT}:{BROKER_HOST}:{BROKER_PORT}",
            f"{LISTS_PORT}:{BROKER_HOST}:{LISTS_PORT}",
        ),
        root / "laptop-relay.log",
    )
    procs["school-relay"] = NsProcess(
        nets.school,
        python_child(RELAY_CHILD, "", f"{BROKER_PORT}:{BROKER_HOST}:{BROKER_PORT}"),
        root / "school-relay.log",
    )
    for relay in ("laptop-relay", "school-relay"):
        assert procs[relay].first_line() == "ready"
    procs["lists"] = NsProcess(
        nets.net,
        [
            sys.executable,
            "-m",
            "http.server",
            str(LISTS_PORT),
            "--bind",
            BROKER_HOST,
            "--directory",
            str(lists),
        ],
        root / "lists.log",
    )
    procs["offsite"] = NsProcess(
        nets.net, python_child(UPSTREAM_CHILD, OFFSITE_HOST), root / "offsite.log", stdin=True
    )
    offsite_port = int(procs["offsite"].first_line())
    world.offsite_port = offsite_port
    # The school: the Pi enrols first, so the laptops' policies carry its beacon key.
    pi_bundle = bundle(hub, "dns-1", "sinkhole", root / "dns-1.bundle")
    bundles = {
        "lt-1": bundle(hub, "lt-1", "pupil-laptop", root / "lt-1.bundle"),
        "st-1": bundle(hub, "st-1", "staff-laptop", root / "st-1.bundle"),
    }
    procs["school-upstream"] = NsProcess(
        nets.school, python_child(UPSTREAM_CHILD, "127.0.0.1"), root / "school-up.log", stdin=True
    )
    school_port = int(procs["school-upstream"].first_line())
    (root / "pi-adult.txt").write_text(f"{BLOCKED}\n")
    pi_config = root / "hedgerow-dns.toml"
    pi_config.write_text(
        PI_CONFIG.format(
            pi=PI,
            root=root,
            upstream=school_port,
            site=SITE,
            identity=root / "pi-identity",
            broker=BROKER_URL,
        )
    )
    assert dns_main(["enroll", "--config", str(pi_config), "--bundle", str(pi_bundle)]) == 0
    procs["hub"] = NsProcess(
        nets.net, [f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path)], root / "hub.log"
    )
    wait_until(lambda: "hedgerow-hub serving" in procs["hub"].text(), what="the hub")
    procs["pi"] = NsProcess(
        nets.school, [f"{BIN}/hedgerow-dns", "serve", "--config", str(pi_config)], root / "pi.log"
    )
    # Home: an "ISP" resolver, the beacon forger and dnsmasq, the home router's resolver.
    procs["isp"] = NsProcess(
        nets.home, python_child(UPSTREAM_CHILD, "127.0.0.1"), root / "isp.log", stdin=True
    )
    isp_port = int(procs["isp"].first_line())
    procs["forger"] = NsProcess(
        nets.home, python_child(FORGER_CHILD, SITE, PI), root / "forger.log", stdin=True
    )
    forger_port = int(procs["forger"].first_line())
    procs["dnsmasq"] = NsProcess(
        nets.home, dnsmasq_command(forger_port, isp_port), root / "dnsmasq.log"
    )
    # The laptop, at school, with a pupil agent and a staff agent.
    for name, device_class, listen in (
        ("lt-1", "pupil-laptop", "127.0.0.1"),
        ("st-1", "staff-laptop", "127.0.0.2"),
    ):
        config = root / f"{name}.toml"
        resolv = root / f"{name}-resolv.conf"
        config.write_text(
            AGENT_CONFIG.format(
                state=root / f"{name}-state",
                root=root,
                name=name,
                broker=BROKER_URL,
                listen=listen,
                offsite=f"{OFFSITE_HOST}:{offsite_port}",
                resolv=resolv,
            )
        )
        laptops[name] = Laptop(name, device_class, listen, config, resolv, root / f"{name}.log")
    world.move("school")
    for name, laptop in laptops.items():
        enrol = world.command(laptop, "enroll", "--bundle", str(bundles[name]))
        assert enrol.returncode == 0, enrol.stdout + enrol.stderr
        check = world.command(laptop, "check")
        assert check.returncode == 0, check.stdout + check.stderr
        world.start_agent(laptop)
    return world


def test_at_school_the_pi_proves_the_site(world: World) -> None:
    world.go("school")
    for laptop in world.laptops.values():
        status = world.status(laptop)
        assert status["upstreams"] == [f"{PI}:53"], status
        assert status["system_resolver"] == "ours", status
        assert status["filter"] == "active", status
        # The OS resolver (the managed resolv.conf) names the agent's own filter.
        assert f"nameserver {laptop.listen}" in laptop.resolv.read_text()
    pupil = world.laptops["lt-1"]
    assert "192.0.2" in world.dig(pupil, "www.bbc.co.uk", "+short")
    assert "0.0.0.0" in world.dig(pupil, BLOCKED, "+short")


def test_at_home_off_site_and_the_hub_alerts_for_pupil_and_staff(world: World) -> None:
    world.go("school")
    before = {name: max((r[0] for r in world.reports(name)), default=0) for name in world.laptops}
    world.move("home")
    world.wait_state("off_site", timeout=10)
    for name in ("lt-1", "st-1"):
        status = world.status(world.laptops[name])
        assert status["filter_mode"] == "off_site" and status["system_resolver"] == "ours", status
        assert status["upstreams"] == [f"{OFFSITE_HOST}:{world.offsite_port}"], status
        # The site_state event arrives (a staff laptop's is stored without its detail: counts
        # only); the offsite_use alert follows within 5 s of its arrival.
        wait_until(
            world.new_event(name, "site_state", before[name]),
            timeout=30,
            what=f"{name}'s off_site event at the hub",
        )
        event = next(e for e in world.events(name, "site_state") if e[0] > before[name])
        assert event[2].get("detail", {}).get("state", "off_site") == "off_site", event
        # One open alert per laptop: a later trip updates it (its last_seen), a first opens it.
        wait_until(
            world.alert_since("offsite_use", name, event[1]),
            timeout=5,
            what=f"{name}'s offsite_use alert within 5 s of the event",
        )
        severity, _, summary, _ = world.alerts("offsite_use", name)[-1]
        assert "off site" in summary, summary
        assert int(severity) >= 1


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ("wrong_key", "wrong_key"),
        ("replay", "wrong_nonce"),
        ("slow", "slow"),
        ("unsigned", "unsigned"),
    ],
)
def test_forged_beacons_from_home_change_nothing(world: World, forgery: str, reason: str) -> None:
    world.go("home")
    world.procs["forger"].send(forgery)
    pupil = world.laptops["lt-1"]
    # The reason proves the home network's forged answer was judged in a fresh check.
    wait_until(
        lambda: world.status(pupil).get("reason") == reason,
        timeout=15,
        interval=0.2,
        what=f"a check judging the {forgery} answer: {world.status(pupil)}",
    )
    # Never on site. (Off site, or captive: the captive check asks the upstreams, not the
    # beacon, and a slow moment of the fake upstream can start a captive spell.)
    for laptop in world.laptops.values():
        assert world.status(laptop)["site_state"] in ("off_site", "captive")
    world.procs["forger"].send("wrong_key")


def test_blocked_stays_blocked_at_home_and_fails_closed(world: World) -> None:
    world.go("home")
    pupil = world.laptops["lt-1"]
    assert "0.0.0.0" in world.dig(pupil, BLOCKED, "+short")
    assert "192.0.2" in world.dig(pupil, "www.bbc.co.uk", "+short")
    # Every upstream dead (the off-site one and the home network's): no captive spell either.
    world.procs["offsite"].send("silent")
    world.procs["isp"].send("silent")
    try:
        assert "0.0.0.0" in world.dig(pupil, BLOCKED, "+short")
        assert "status: SERVFAIL" in world.dig(pupil, "never-asked-before.example")
        assert world.status(pupil)["site_state"] == "off_site"
    finally:
        world.procs["offsite"].send("answer")
        world.procs["isp"].send("answer")


def test_captive_portal_entered_and_left(world: World) -> None:
    world.go("home")
    pupil = world.laptops["lt-1"]
    world.procs["offsite"].send("silent")  # the hotel lets only its own DNS through
    try:
        world.wait_state("captive", timeout=15, laptops=["lt-1"])
        status = world.status(pupil)
        assert status["filter_mode"] == "captive", status
        assert status["upstreams"] == [f"{HOME_ROUTER}:53"], status
        # Forwarded to the network's resolver, still filtered by the policy.
        assert "192.0.2" in world.dig(pupil, "portal-check.example", "+short")
        assert "0.0.0.0" in world.dig(pupil, BLOCKED, "+short")
        # captive_max_s = 10: then back to the off-site upstreams (dead: fails closed).
        world.wait_state("off_site", timeout=25, laptops=["lt-1"])
        assert world.status(pupil)["filter_mode"] == "off_site"
    finally:
        world.procs["offsite"].send("answer")
    wait_until(
        lambda: any(
            e[2]["detail"]["state"] == "captive" for e in world.events("lt-1", "site_state")
        ),
        timeout=30,
        what="the captive site_state event at the hub",
    )


def test_resolver_rewritten_behind_the_agents_back_is_restored_with_a_tamper_alert(
    world: World,
) -> None:
    pupil = world.laptops["lt-1"]
    world.go(world.nets.where if world.nets.where in ("school", "home") else "school")
    assert world.status(pupil)["system_resolver"] == "ours"
    # As NetworkManager would: the network's servers written back, no link change at all.
    gateway = PI if world.nets.where == "school" else HOME_ROUTER
    before = max((r[0] for r in world.reports("lt-1")), default=0)
    pupil.resolv.write_text(f"# NetworkManager\nnameserver {gateway}\n")
    assert world.status(pupil)["system_resolver"] == gateway
    wait_until(
        lambda: f"nameserver {pupil.listen}" in pupil.resolv.read_text(),
        timeout=45,  # the tamper watch looks every 30 s
        what="the agent restoring its resolv.conf",
    )
    assert world.status(pupil)["system_resolver"] == "ours"
    wait_until(
        lambda: any(e[0] > before for e in world.events("lt-1", "tamper")),
        timeout=30,
        what="the tamper event at the hub",
    )
    tamper = next(e for e in world.events("lt-1", "tamper") if e[0] > before)
    assert tamper[2]["detail"]["restored"] is True, tamper
    wait_until(
        lambda: any(int(a[3]) >= tamper[1] for a in world.alerts("tamper", "lt-1")),
        timeout=5,
        what="the tamper alert",
    )


def test_report_concern_reaches_the_hub_as_an_alert(world: World) -> None:
    pupil = world.laptops["lt-1"]
    count = len(world.alerts("concern", "lt-1"))
    sent = world.command(pupil, "report-concern", "someone sent me a horrible video")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_until(
        lambda: len(world.alerts("concern", "lt-1")) > count, timeout=30, what="concern alert"
    )
    severity, _, summary, _ = world.alerts("concern", "lt-1")[-1]
    assert int(severity) == 4, summary


def test_status_json_has_every_documented_field(world: World) -> None:
    fields = (
        "device", "group", "site_state", "reason", "since", "policy_version", "filter",
        "filter_mode", "upstreams", "system_resolver", "spool_depth", "oldest_unreceipted",
        "last_publish", "broker", "sniffer", "health",
    )  # fmt: skip
    for laptop in world.laptops.values():
        wait_until(
            world.status_is(laptop, "broker", "connected"),
            what="connected",
        )
        status = world.status(laptop)
        missing = [f for f in fields if f not in status]
        assert not missing, (missing, status)
        assert status["device"] == laptop.name and status["running"] is True
        assert status["broker"] == "connected" and status["policy_version"] >= 1
        assert status["sniffer"] == "off in the config"
        assert status["group"] == ("pupils" if laptop.name == "lt-1" else "staff")


def _publish_retained(world: World, topic: str, data: bytes, name: str) -> None:
    path = world.root / f"{name}.msg"
    path.write_bytes(data)
    done = run_in(
        world.nets.net,
        *python_child(RETAIN_CHILD, "127.0.0.1", str(BROKER_PORT), topic, str(path)),
    )
    assert done.returncode == 0 and "published" in done.stdout, done.stdout + done.stderr


def test_forged_or_older_policy_is_refused(world: World) -> None:
    pupil = world.laptops["lt-1"]
    version = int(world.status(pupil)["policy_version"])
    rows = query(
        world.hub,
        "SELECT version, body, signed FROM policies WHERE site = ? AND device = ? "
        "ORDER BY version DESC LIMIT 1",
        (SITE, "lt-1"),
    )
    assert rows and int(rows[0][0]) == version, (rows, version)
    document = json.loads(str(rows[0][1]))
    genuine = bytes(rows[0][2])
    topic = device_policy(SITE, "lt-1")
    now_ms = int(time.time() * 1000)
    payload = {"v": 1, "site": SITE, "document": document}
    older = sign_message(
        payload,
        site=SITE,
        device="lt-1",
        version=version - 1,
        time_ms=now_ms,
        signer=HubKeys(world.hub.keys_dir).signing,
    )
    forged = sign_message(
        payload,
        site=SITE,
        device="lt-1",
        version=version + 10,
        time_ms=now_ms,
        signer=SigningKey.generate(),
    )
    try:
        # In order on one subscription: once the forged one is refused, the older one (sent
        # first) has been judged too.
        _publish_retained(world, topic, older, "older-policy")
        _publish_retained(world, topic, forged, "forged-policy")
        wait_until(
            lambda: "a policy was refused: wrong_key" in pupil.log.read_text(),
            timeout=30,
            what="the agent refusing the forged policy: " + pupil.log.read_text()[-2000:],
        )
        assert (
            f"an older policy was refused: replay: version {version - 1}" in pupil.log.read_text()
        )
        status = world.status(pupil)
        assert status["policy_version"] == version, status
        assert f"policy version {version - 1} applied" not in pupil.log.read_text()
        assert f"policy version {version + 10} applied" not in pupil.log.read_text()
    finally:
        _publish_retained(world, topic, genuine, "genuine-policy")
    # Still filtering by the kept policy.
    assert "0.0.0.0" in world.dig(pupil, BLOCKED, "+short")


def test_back_at_school_on_site_again(world: World) -> None:
    world.go("home")
    world.move("school")
    world.wait_state("on_site", timeout=10)
    for laptop in world.laptops.values():
        assert world.status(laptop)["upstreams"] == [f"{PI}:53"]


def _is_will(kind: str, body: str) -> bool:
    """The MQTT last will: a heartbeat sealed (and numbered) at connect, sent by the broker only
    when the agent dies, so its seq is older than what the agent sent meanwhile."""
    return kind == "heartbeat" and json.loads(body).get("clean_stop") is False


def _seqs_in_order(world: World, device: str, after_id: int) -> tuple[list[int], list[int]]:
    """(every seq, the seqs stored after report `after_id`, sorted, the last wills left out);
    fails if any seq is stored twice, or if the later urgent events, or the later routine
    reports, arrived out of order."""
    rows = query(
        world.hub, "SELECT id, seq, kind, body FROM reports WHERE device = ? ORDER BY id", (device,)
    )
    seqs = [int(r[1]) for r in rows]
    assert len(seqs) == len(set(seqs)), f"{device}: duplicated seq"
    later = [r for r in rows if int(r[0]) > after_id and not _is_will(r[2], r[3])]
    # Urgent events are sent ahead of the routine backlog by design: each class in order.
    for urgent in (True, False):
        ones = [int(r[1]) for r in later if _is_urgent(r[2], r[3]) is urgent]
        assert ones == sorted(ones), (device, "urgent" if urgent else "routine", ones)
    return sorted(seqs), sorted(int(r[1]) for r in later)


def _is_urgent(kind: str, body: str) -> bool:
    """An event the agent sends ahead of everything routine (docs/agent.md)."""
    return kind == "event" and json.loads(body).get("type") in URGENT_EVENTS


def test_broker_down_then_back_every_report_once_in_order(world: World) -> None:
    before = {name: max((r[0] for r in world.reports(name)), default=0) for name in world.laptops}
    world.procs["broker"].stop()
    for laptop in world.laptops.values():
        wait_until(
            world.status_is(laptop, "broker", "disconnected"),
            timeout=30,
            what=f"{laptop.name} noticing the broker is gone",
        )
    pupil = world.laptops["lt-1"]
    # Several windows' summaries and heartbeats pile up in the spool.
    wait_until(lambda: world.status(pupil).get("spool_depth", 0) >= 6, timeout=30, what="a backlog")
    world.start_broker()
    for laptop in world.laptops.values():
        flushed = world.command(laptop, "flush", "--timeout", "40", timeout=60)
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    for name in world.laptops:
        earlier = max(seq for rid, seq, _ in world.reports(name) if rid <= before[name])
        _, later = _seqs_in_order(world, name, before[name])
        # One process, one block of numbers: what it sent since is gap-free from the last seen.
        assert later == list(range(earlier + 1, earlier + 1 + len(later))), (name, earlier, later)
        assert len(later) >= 6, later


def test_sigkill_during_writes_loses_nothing(world: World) -> None:
    pupil = world.laptops["lt-1"]
    before = max(r[0] for r in world.reports("lt-1"))
    acknowledged: list[str] = []

    def send_concerns() -> None:
        for n in range(40):
            text = f"burst concern {n}"
            done = world.command(pupil, "report-concern", text, timeout=20)
            if done.returncode != 0:
                return
            acknowledged.append(text)

    sender = threading.Thread(target=send_concerns)
    sender.start()
    try:
        wait_until(lambda: len(acknowledged) >= 5, timeout=60, what="concerns being spooled")
        assert pupil.proc is not None
        pupil.proc.kill()
    finally:
        sender.join(60)
    pupil.proc.stop()
    check = world.command(pupil, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    world.start_agent(pupil)
    flushed = world.command(pupil, "flush", "--timeout", "40", timeout=60)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    texts = [e[2].get("detail", {}).get("text") for e in world.events("lt-1", "concern")]
    for text in acknowledged:
        assert texts.count(text) == 1, (text, texts)
    seqs, _ = _seqs_in_order(world, "lt-1", before)
    # Each process that opens the spool reserves a new block of numbers and a crash skips the
    # rest of its block (common/wire/sequence.py), by design; the first number of a block may
    # go to the MQTT last will, never sent after a clean connect. Any other gap is a loss.
    gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
    assert all(b % BLOCK_SIZE in (1, 2) for _, b in gaps), gaps
    world.wait_state(
        "on_site" if world.nets.where == "school" else "off_site", timeout=30, laptops=["lt-1"]
    )
