"""The shipped units under a booted systemd: this machine's own OS booted in a container
(systemd-nspawn, `--volatile=yes`: a fresh tmpfs root with the host's /usr read-only, thrown
away at the end; `--private-network`: only its own loopback), the unit file and sysusers
snippet from systemd/ put in its /etc, and the daemon started with `systemctl start`. So the
sandboxing (the system call filter, ProtectSystem, ProtectProc, the capability sets, the user
from sysusers) meets the running daemon, which `systemd-analyze verify` cannot show.

The one change to a unit: when the test's Python or checkout lives where the unit hides
(/root or /home: ProtectHome=yes; /tmp: PrivateTmp=yes), a drop-in makes those paths visible
read-only (BindReadOnlyPaths=, with ProtectHome=tmpfs for a home). On a school's Pi the venv is
under /opt and needs none of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dns_support import write_config
from tests.services import stop_process
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
NSPAWN = shutil.which("systemd-nspawn")


def _under(path: Path, *tops: str) -> bool:
    return any(path.is_relative_to(top) for top in tops)


@dataclass
class Booted:
    """A booted container: its PID 1 (seen from here) and its console log."""

    leader: int
    log: Path

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "-r", "-w", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def journal(self, unit: str) -> str:
        """The unit's journal, in full."""
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout


def _leader(nspawn_pid: int) -> int | None:
    """The container's PID 1: the child of systemd-nspawn running systemd."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == nspawn_pid and command.endswith(b"systemd"):
            return int(entry.name)
    return None


@contextmanager
def booted(tmp_path: Path, binds: list[tuple[Path, str]]) -> Iterator[Booted]:
    """Boot this machine's OS in a throwaway container with `binds` (host path, container
    path) read-only, until the block ends; the container is stopped by its nspawn PID."""
    assert NSPAWN is not None, (
        "systemd-nspawn is missing: make bootstrap installs systemd-container"
    )
    log = tmp_path / "console.log"
    args = [NSPAWN, "--directory=/", "--volatile=yes", "--register=no", "--keep-unit"]
    args += ["--private-network", "--quiet", f"--machine=hedgerow-{os.getpid()}"]
    # Masked: with only a loopback there is no network to wait for (it would hold
    # network-online.target, which the units want, for two minutes).
    args.append("--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service")
    # The volatile /etc has no ld.so.cache, which ctypes.util.find_library (libpcap) reads.
    args.append("--bind-ro=/etc/ld.so.cache")
    for host, inside in binds:
        args.append(f"--bind-ro={host}:{inside}")
    args += ["--boot", "systemd.firstboot=off"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: _leader(proc.pid) is not None,
            timeout=60,
            what=f"the container's systemd ({log})",
        )
        leader = _leader(proc.pid)
        assert leader is not None
        box = Booted(leader, log)
        # degraded is fine: host units that need real hardware fail in a container.
        wait_until(
            lambda: (
                box.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
            ),
            timeout=120,
            what="the container to finish booting",
        )
        yield box
    finally:
        stop_process(proc)


def _units(tmp_path: Path, unit: str, sysusers: str | None) -> list[tuple[Path, str]]:
    """The binds that install a unit from systemd/ (plus the drop-in, if needed) and its
    sysusers snippet, and make the venv and the checkout reachable."""
    binds = [(ROOT / "systemd" / unit, f"/etc/systemd/system/{unit}")]
    if sysusers is not None:
        binds.append((ROOT / "systemd" / "sysusers.d" / sysusers, f"/etc/sysusers.d/{sysusers}"))
    binds += [
        (VENV, "/opt/hedgerow/venv"),
        (ROOT, str(ROOT)),
        (VENV, str(VENV)),
        (Path(sys.base_prefix), sys.base_prefix),
    ]
    # Hidden from the service by ProtectHome=yes (homes) or PrivateTmp=yes (a checkout in /tmp).
    paths = (ROOT, VENV, Path(sys.base_prefix))
    hidden = [p for p in paths if _under(p, "/root", "/home", "/tmp", "/var/tmp")]
    if hidden:
        home = any(_under(p, "/root", "/home") for p in hidden)
        dropin = tmp_path / f"{unit}.d"
        dropin.mkdir()
        (dropin / "test-paths.conf").write_text(
            "[Service]\n# The test's Python or checkout lives where the unit hides.\n"
            + ("ProtectHome=tmpfs\n" if home else "")
            + f"BindReadOnlyPaths={' '.join(str(p) for p in hidden)}\n"
        )
        binds.append((dropin, f"/etc/systemd/system/{unit}.d"))
    return binds


@pytest.fixture(autouse=True)
def _root() -> None:
    assert os.geteuid() == 0, "booting a container needs root, as CI runs"


def test_hedgerow_dns_runs_sandboxed_under_systemd(tmp_path: Path) -> None:
    """`systemctl start hedgerow-dns`: the sysusers user, port 53 through the ambient
    capability alone, READY (Type=notify) and watchdog pings, a blocked answer from the lists,
    a reload by SIGHUP, a clean stop; nothing refused by the sandbox in its journal."""
    etc = tmp_path / "etc-hedgerow"
    etc.mkdir()
    config = write_config(etc, ["127.0.0.1:5399"], 53)
    text = config.read_text().replace(str(etc / "cache"), "/var/cache/hedgerow")
    config.write_text(text.replace(str(etc), "/etc/hedgerow"))
    binds = _units(tmp_path, "hedgerow-dns.service", "hedgerow-dns.conf")
    binds.append((etc, "/etc/hedgerow"))
    with booted(tmp_path, binds) as box:
        started = box.run("systemctl", "start", "hedgerow-dns.service", timeout=240)
        journal = box.journal("hedgerow-dns.service")
        assert started.returncode == 0, started.stderr + journal[-4000:]
        state = box.run(
            "systemctl",
            "show",
            "-p",
            "ActiveState,SubState,MainPID,WatchdogUSec",
            "hedgerow-dns.service",
        ).stdout
        assert "ActiveState=active" in state and "SubState=running" in state, state
        assert "WatchdogUSec=30s" in state, state
        pid = next(line.split("=")[1] for line in state.splitlines() if line.startswith("MainPID"))
        owner = box.run("ps", "-o", "user=", "-p", pid).stdout.strip()
        assert owner == "hedgerow", owner
        status = box.run("cat", f"/proc/{pid}/status").stdout
        eff = next(
            int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")
        )
        assert eff == 1 << 10, hex(eff)  # CAP_NET_BIND_SERVICE and nothing else
        answer = box.run(
            "dig", "+short", "+time=2", "+tries=3", "-p", "53", "@127.0.0.1", "casino.example"
        )
        assert answer.stdout.strip() == "0.0.0.0", answer.stdout + answer.stderr
        assert box.run("systemctl", "reload", "hedgerow-dns.service").returncode == 0
        time.sleep(2)  # the reload parses in a child; the server keeps answering meanwhile
        again = box.run("dig", "+short", "+time=2", "+tries=3", "@127.0.0.1", "casino.example")
        assert again.stdout.strip() == "0.0.0.0"
        stopped = box.run("systemctl", "stop", "hedgerow-dns.service", timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        journal = box.journal("hedgerow-dns.service")
        result = box.run("systemctl", "show", "-p", "Result", "hedgerow-dns.service").stdout
        assert "Result=success" in result, result + journal[-4000:]
    assert "hedgerow-dns" in journal and "Started hedgerow-dns.service" in journal, journal
    for refused in ("Operation not permitted", "Permission denied", "Traceback", "EPERM"):
        assert refused not in journal, journal[-4000:]


def test_hedgerow_hub_runs_sandboxed_under_systemd(tmp_path: Path) -> None:
    """`systemctl start hedgerow-hub` after `hedgerow-hub init` as its sysusers user, with a
    Mosquitto beside it: READY (it connected and subscribed), its ingest workers started, the
    dashboard answering on 127.0.0.1:8080, a reload by SIGHUP, a clean stop; nothing refused by
    the sandbox (no capabilities, PrivateUsers, the system call filter) in its journal."""
    broker = tmp_path / "broker"
    broker.mkdir()
    (broker / "mosquitto.conf").write_text("listener 1883 127.0.0.1\nallow_anonymous true\n")
    binds = _units(tmp_path, "hedgerow-hub.service", "hedgerow-hub.conf")
    binds.append((broker, "/etc/hedgerow-test"))
    unit = "hedgerow-hub.service"
    with booted(tmp_path, binds) as box:
        mqtt = box.run(
            "systemd-run",
            "--unit=test-broker",
            "--uid=nobody",
            "/usr/sbin/mosquitto",
            "-c",
            "/etc/hedgerow-test/mosquitto.conf",
        )
        assert mqtt.returncode == 0, mqtt.stderr
        # First boot enabled the unit (its [Install]) and it started, and failed, before there
        # was a hub.toml: stop its restarts until there is one.
        box.run("systemctl", "stop", unit)
        box.run("systemctl", "reset-failed", unit)
        data = "/var/lib/hedgerow-hub"
        assert (
            box.run(
                "install", "-d", "-o", "hedgerow-hub", "-g", "hedgerow-hub", "-m", "0750", data
            ).returncode
            == 0
        )
        init = box.run(
            "setpriv",  # runuser needs PAM, which an empty /etc lacks
            "--reuid=hedgerow-hub",
            "--regid=hedgerow-hub",
            "--clear-groups",
            "/opt/hedgerow/venv/bin/hedgerow-hub",
            "init",
            "--data",
            f"{data}/new",
            "--mqtt",
            "mqtt://127.0.0.1:1883",
        )
        assert init.returncode == 0, init.stdout + init.stderr
        # init makes a new directory; the unit's state directory is its parent's name.
        moved = box.run(
            "sh",
            "-c",
            f"mv {data}/new/* {data}/ && rmdir {data}/new && "
            f"sed -i 's#{data}/new#{data}#g' {data}/hub.toml",
        )
        assert moved.returncode == 0, moved.stderr
        started = box.run("systemctl", "start", unit, timeout=240)
        journal = box.journal(unit)
        assert started.returncode == 0, started.stderr + journal[-4000:]
        state = box.run("systemctl", "show", "-p", "ActiveState,SubState,MainPID", unit).stdout
        assert "ActiveState=active" in state and "SubState=running" in state, state
        pid = next(line.split("=")[1] for line in state.splitlines() if line.startswith("MainPID"))
        status = box.run("cat", f"/proc/{pid}/status").stdout
        eff = next(
            int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")
        )
        assert eff == 0, hex(eff)
        login = box.run(
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:8080/login', timeout=10).status)",
        )
        assert login.stdout.strip() == "200", login.stdout + login.stderr
        assert box.run("systemctl", "reload", unit).returncode == 0
        wait_until(lambda: "reload" in box.journal(unit).lower(), timeout=30, what="the reload")
        stopped = box.run("systemctl", "stop", unit, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        journal = box.journal(unit)
        result = box.run("systemctl", "show", "-p", "Result", unit).stdout
        assert "Result=success" in result, result + journal[-4000:]
    assert "hedgerow-hub serving" in journal, journal[-4000:]
    for refused in ("Operation not permitted", "Permission denied", "Traceback", "EPERM"):
        assert refused not in journal, journal[-4000:]


AGENT_TOML = """
[agent]
state_dir = "/var/lib/hedgerow/agent"
control_socket = "/run/hedgerow-agent/agent.sock"
[hub]
url = "mqtt://127.0.0.1:1883"
[site]
beacon_servers = ["127.0.0.1:5301"]
check_interval_s = 2
[filter]
listen = "127.0.0.1:53"
offsite_upstreams = ["127.0.0.1:5302"]
manage_system_resolver = true
timeout_ms = 300
[sniffer]
enabled = true
interface = "lo"
"""


def test_hedgerow_agent_runs_sandboxed_under_systemd(tmp_path: Path) -> None:
    """`systemctl start hedgerow-agent` on an enrolled "laptop" (the container, root, its own
    /etc): the filter on 127.0.0.1:53, the system resolver pointed at it, the sniffer child
    capturing (CAP_NET_RAW through the unit's bounding set under NoNewPrivileges) while the
    agent's own effective set lacks it, status over the control socket; a stop puts the
    resolver back; nothing refused by the sandbox in the journal."""
    from hub.cli import main as hub_main
    from tests.hub_ingest_fixtures import make_hub

    hub = make_hub(tmp_path, "mqtt://127.0.0.1:1883", None)
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    (test_dir / "mosquitto.conf").write_text("listener 1883 127.0.0.1\nallow_anonymous true\n")
    bundle = test_dir / "lt-1.bundle"
    enrol = ["enroll", "bundle", "--config", str(hub.path), "--device", "lt-1"]
    enrol += ["--class", "pupil-laptop", "--broker", "mqtt://127.0.0.1:1883", "--out", str(bundle)]
    assert hub_main(enrol) == 0
    etc = tmp_path / "etc-hedgerow"
    etc.mkdir()
    (etc / "agent.toml").write_text(AGENT_TOML)
    unit = "hedgerow-agent.service"
    binds = _units(tmp_path, unit, None)
    binds += [(etc, "/etc/hedgerow"), (test_dir, "/etc/hedgerow-test")]
    agent = "/opt/hedgerow/venv/bin/hedgerow-agent"
    config = "/etc/hedgerow/agent.toml"
    with booted(tmp_path, binds) as box:
        box.run("systemctl", "stop", unit)  # first boot started it before it was enrolled
        box.run("systemctl", "reset-failed", unit)
        mqtt = box.run(
            "systemd-run",
            "--unit=test-broker",
            "--uid=nobody",
            "/usr/sbin/mosquitto",
            "-c",
            "/etc/hedgerow-test/mosquitto.conf",
        )
        assert mqtt.returncode == 0, mqtt.stderr
        box.run("install", "-d", "-m", "0700", "/var/lib/hedgerow/agent")
        enrolled = box.run(
            agent,
            "enroll",
            "--config",
            config,
            "--bundle",
            str(bundle).replace(str(test_dir), "/etc/hedgerow-test"),
        )
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        before = box.run("cat", "/etc/resolv.conf").stdout
        started = box.run("systemctl", "start", unit, timeout=240)
        journal = box.journal(unit)
        assert started.returncode == 0, started.stderr + journal[-4000:]
        status: dict[str, object] = {}

        def sniffing() -> bool:
            done = box.run(agent, "status", "--config", config, "--json")
            status["_out"] = done.stdout[-500:] + done.stderr[-500:]
            if done.returncode != 0:
                return False
            status.update(json.loads(done.stdout))
            return status.get("sniffer") == "running" and status.get("system_resolver") == "ours"

        try:
            wait_until(sniffing, timeout=60, what="the sniffer and the resolver")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {status}; {box.journal(unit)[-3000:]}") from exc
        assert status["filter"] == "active", status
        assert "127.0.0.1" in box.run("cat", "/etc/resolv.conf").stdout
        state = box.run("systemctl", "show", "-p", "MainPID", unit).stdout
        pid = state.strip().split("=")[1]
        proc_status = box.run("cat", f"/proc/{pid}/status").stdout
        eff = next(
            int(line.split()[1], 16)
            for line in proc_status.splitlines()
            if line.startswith("CapEff:")
        )
        assert not eff >> 13 & 1, hex(eff)  # CAP_NET_RAW: only the sniffer child uses it
        stopped = box.run("systemctl", "stop", unit, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert box.run("cat", "/etc/resolv.conf").stdout == before
        journal = box.journal(unit)
        result = box.run("systemctl", "show", "-p", "Result", unit).stdout
        assert "Result=success" in result, result + journal[-4000:]
    for refused in ("Operation not permitted", "Permission denied", "Traceback", "EPERM"):
        assert refused not in journal, journal[-4000:]
