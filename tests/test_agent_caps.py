"""CAP_NET_RAW kept out of the agent's own hands (agent/laptop/caps.py): after the drop, the
agent process cannot open a packet socket, yet the sniffer child it starts captures on lo.
Run in a fresh Python process (the drop is per thread and for good), as root, as CI runs."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import socket, time
from agent.laptop import caps
from agent.laptop.sniffer.supervisor import Sniffer

assert caps.drop_net_raw_effective(), "CAP_NET_RAW was not effective to begin with"
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    print("parent: raw socket opened")
except PermissionError:
    print("parent: EPERM")
status = open("/proc/self/status").read()
eff = int(next(l for l in status.splitlines() if l.startswith("CapEff:")).split()[1], 16)
print("parent effective net_raw:", bool(eff >> 13 & 1))
sniffer = Sniffer(lambda finding: None, allowed_dns=lambda: [], interface="lo")
sniffer.start()
deadline = time.monotonic() + 60
while sniffer.state != "running" and time.monotonic() < deadline:
    time.sleep(0.1)
print("child:", sniffer.state)
sniffer.stop()
"""


def test_the_agent_drops_net_raw_and_its_sniffer_child_keeps_it() -> None:
    assert os.geteuid() == 0, "this test needs root, as the agent and CI run"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "parent: EPERM" in out, done.stdout
    assert "parent effective net_raw: False" in out
    assert "child: running" in out, done.stdout + done.stderr[-2000:]
