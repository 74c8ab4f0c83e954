"""The packet sniffer (Linux, CAP_NET_RAW, libpcap): DNS, DoT and DoQ packets seen by a scapy
child process, analysed in the parent into bypass findings.

- `supervisor.Sniffer`: runs and restarts the child; the parent side.
- `child`: the child process (`python -m agent.laptop.sniffer.child`).
- `capture`: the only scapy import, loaded in the child only (and in tests).
- `analysis.analyse`, `observed.Observed`, `client_hello`, `flows`, `preflight`: no scapy.

This package's own import loads no scapy, so the parent may import `Sniffer` from here.
"""

from agent.laptop.sniffer.supervisor import Sniffer

__all__ = ["Sniffer"]
