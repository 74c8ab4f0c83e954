"""Activity summaries: the window's fields and their counts_only form, new processes by name,
bytes per interface and a tunnel appearing (in network namespaces this test makes), terminal
idleness from a real pty, logind's IdleHint, the de-duplication gate and the shipped data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from agent.laptop.activity import ActivitySampler, BypassFinding, FindingGate
from agent.laptop.activity.presence import AwakeClock, LogindIdle, tty_idle_s
from agent.laptop.data import encrypted_dns_ips, flagged_apps
from tests.waiting import wait_until

FIELDS = {"users", "awake_s", "active_s", "flagged_apps", "tunnels", "interfaces"}


def new_sampler() -> ActivitySampler:
    """A sampler with the shipped flagged list."""
    return ActivitySampler(flagged_apps=flagged_apps(), allowed_dns=lambda: ["127.0.0.53"])


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    """A copy of sleep with a name of its own, and the processes started from it, stopped by
    pid at the end."""
    path = tmp_path / "hrwprobe"
    shutil.copy("/bin/sleep", path)
    started: list[subprocess.Popen[bytes]] = []
    yield path, started
    for proc in started:
        proc.kill()
        proc.wait()


def start(path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """Start the probe and wait until it is exec'd (named)."""
    proc = subprocess.Popen([str(path), "300"])
    started.append(proc)
    wait_until(lambda: psutil.Process(proc.pid).name() == path.name, timeout=10, what="exec")


def test_window_fields_full(probes: tuple[Path, list[subprocess.Popen[bytes]]]) -> None:
    """The full window: JSON-ready, processes by name, reset by each call."""
    path, started = probes
    s = new_sampler()
    start(path, started)
    start(path, started)
    s.sample()
    window = s.window(counts_only=False)
    json.dumps(window)  # JSON-ready
    users = psutil.users()
    assert set(window) == FIELDS | {"processes_new"} | ({"user"} if users else set())
    assert window["users"] == len({u.name for u in users})
    new = window["processes_new"]
    assert isinstance(new, dict) and new["hrwprobe"] == 2
    assert isinstance(window["awake_s"], int) and window["awake_s"] >= 0
    assert isinstance(window["active_s"], int) and 0 <= window["active_s"] <= window["awake_s"] + 1
    assert window["flagged_apps"] == [] and window["tunnels"] == []
    assert "lo" not in window["interfaces"]  # type: ignore[operator]
    again = s.window(counts_only=False)
    assert "hrwprobe" not in again["processes_new"]  # type: ignore[operator]


def test_window_counts_only(probes: tuple[Path, list[subprocess.Popen[bytes]]]) -> None:
    """counts_only: no user name, and new processes as a total only."""
    path, started = probes
    s = new_sampler()
    start(path, started)
    window = s.window(counts_only=True)  # a window without a sample() still sees it
    assert "user" not in window and "processes_new" not in window
    assert set(window) == FIELDS | {"processes_new_count"}
    count = window["processes_new_count"]
    assert isinstance(count, int) and count >= 1


def test_awake_clock_laps() -> None:
    """Awake and asleep seconds are never negative and the next lap starts afresh."""
    clock = AwakeClock()
    awake, asleep = clock.lap()
    assert awake >= 0 and asleep >= 0
    again, _ = clock.lap()
    assert again >= 0


def test_user_state_matches_psutil() -> None:
    """Nobody logged in: (False, False); someone: logged in is True."""
    logged_in, active = new_sampler().user_state()
    assert logged_in == bool(psutil.users())
    if not logged_in:
        assert active is False


def test_tty_idle_from_a_real_pty() -> None:
    """A terminal's idle time is now minus its device's access time, as `w` computes it."""
    master, slave = os.openpty()
    try:
        device = os.ttyname(slave)
        used = os.stat(device).st_atime - 600
        os.utime(device, (used, used))
        terminal = device.removeprefix("/dev/")
        assert tty_idle_s(terminal, used + 42) == pytest.approx(42, abs=0.01)
        assert tty_idle_s(terminal, used - 5) == 0  # a clock step back is not negative idle
    finally:
        os.close(master)
        os.close(slave)
    assert tty_idle_s(":0", 0.0) is None
    assert tty_idle_s("pts/does-not-exist", 0.0) is None


def loginctl(answers: dict[str, str | None]) -> LogindIdle:
    """A LogindIdle whose commands answer from a table (a fake at the process boundary)."""

    def run(argv: Sequence[str]) -> str | None:
        key = "list" if argv[1] == "list-sessions" else argv[2]
        return answers.get(key)

    return LogindIdle(run)


@pytest.mark.parametrize(
    ("answers", "active"),
    [
        ({"list": None}, None),  # no logind
        ({"list": ""}, None),  # no sessions
        ({"list": "2 1000 ann seat0\n", "2": "Class=user\nIdleHint=no\n"}, True),
        ({"list": "2 1000 ann seat0\n", "2": "Class=user\nIdleHint=yes\n"}, False),
        ({"list": "c1 120 gdm seat0\n", "c1": "Class=greeter\nIdleHint=no\n"}, None),
        (
            {"list": "2 1000 a seat0\n3 1001 b\n", "2": "Class=user\nIdleHint=yes\n", "3": "Class=user\nIdleHint=no\n"},
            True,
        ),
    ],
)
def test_logind_idle_hint(answers: dict[str, str | None], active: bool | None) -> None:
    """IdleHint of user sessions decides; without logind, None (the tty rule is used)."""
    assert loginctl(answers).active(0.0) is active


def test_logind_absent_is_asked_again_only_later() -> None:
    """A host without logind is not asked every sample."""
    calls: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> str | None:
        calls.append(argv)
        return None

    idle = LogindIdle(run)
    assert idle.active(1000.0) is None
    assert idle.active(1010.0) is None
    assert len(calls) == 1
    idle.active(1000.0 + 601)
    assert len(calls) == 2


def test_finding_gate() -> None:
    """Once per key per 10 minutes; other keys pass."""
    now = [0.0]
    gate = FindingGate(lambda: now[0])
    dot = BypassFinding("dot", "9.9.9.9", 853, "tcp", "firefox", {"pid": 1})
    same = BypassFinding("dot", "9.9.9.9", 853, "tcp", "firefox", {"pid": 2})
    other = BypassFinding("dot", "9.9.9.9", 853, "tcp", "chrome")
    assert gate.admit([dot, same]) == [dot]
    assert gate.admit([same, other]) == [other]
    now[0] = 600.0
    assert gate.admit([same]) == [same]
    assert dot.key() == same.key() == ("dot", "9.9.9.9", 853, "firefox")


def test_finding_checks_its_method() -> None:
    """A finding's method is one of the six."""
    with pytest.raises(ValueError, match="bypass method"):
        BypassFinding("vpn", "", 0, "", None)


def test_shipped_data() -> None:
    """The shipped lists load and hold what they must."""
    apps = flagged_apps()
    assert {"openvpn", "tor", "wireguard", "psiphon", "tailscaled"} <= set(apps)
    ips = encrypted_dns_ips()
    for address in ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "1.1.1.1", "1.0.0.1",
                    "2606:4700:4700::1111", "9.9.9.9", "208.67.222.222", "94.140.14.14",
                    "45.90.28.1", "185.228.168.168", "194.242.2.2"):
        assert ips.contains(address), address
    assert not ips.contains("192.0.2.1") and not ips.contains("not an address")
    assert ips.version


NETNS_SCRIPT = """
import json, socket, subprocess, sys
from agent.laptop.activity import ActivitySampler
s = ActivitySampler(flagged_apps=[], allowed_dns=lambda: [])
s.window(counts_only=True)  # start a fresh window
subprocess.run(["ip", "tuntap", "add", "dev", sys.argv[1], "mode", "tun"], check=True)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    for _ in range(20):
        sock.sendto(b"x" * 1000, (sys.argv[2], 9))
findings = [f.to_json() for f in s.sample()]
print(json.dumps({"findings": findings, "window": s.window(counts_only=True)}))
"""


def ip(*args: str) -> None:
    """Run `ip`; fail loudly."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    """Namespaces A and B joined by a veth pair (10.213.0.1/30 in A, .2 in B); removed after."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"hrw-act-a-{tag}", f"hrw-act-b-{tag}"
    ip("netns", "add", a)
    try:
        ip("netns", "add", b)
        try:
            ip("-n", a, "link", "add", "hv0", "type", "veth", "peer", "name", "hv1", "netns", b)
            ip("-n", a, "addr", "add", "10.213.0.1/30", "dev", "hv0")
            ip("-n", b, "addr", "add", "10.213.0.2/30", "dev", "hv1")
            for ns, dev in ((a, "hv0"), (b, "hv1"), (a, "lo"), (b, "lo")):
                ip("-n", ns, "link", "set", dev, "up")
            yield a, b
        finally:
            ip("netns", "del", b)
    finally:
        ip("netns", "del", a)


def test_interfaces_and_tunnels_in_a_namespace(two_namespaces: tuple[str, str]) -> None:
    """In a namespace of its own, a sampler sees bytes sent over a veth, and a tun interface
    that appears as a tunnel (in the window and as one finding)."""
    a, _ = two_namespaces
    out = subprocess.run(
        ["ip", "netns", "exec", a, sys.executable, "-c", NETNS_SCRIPT, "tunhrw0", "10.213.0.2"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    result = json.loads(out.stdout)
    window = result["window"]
    assert window["tunnels"] == ["tunhrw0"]
    assert set(window["interfaces"]) == {"hv0", "tunhrw0"}
    assert window["interfaces"]["hv0"]["tx_bytes"] >= 20 * 1000
    assert window["interfaces"]["tunhrw0"] == {"rx_bytes": 0, "tx_bytes": 0}
    assert [(f["method"], f["detail"]) for f in result["findings"]] == [
        ("tunnel", {"interface": "tunhrw0"})
    ]
