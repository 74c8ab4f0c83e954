"""Network interfaces: tunnels appearing (VPNs and their kind) and bytes moved per interface."""

from __future__ import annotations

from agent.laptop.activity import host

# tun/tap: OpenVPN and most VPN apps; wg: WireGuard; ppp: PPTP/L2TP; utun: macOS VPNs;
# tailscale and zt (ZeroTier): mesh VPNs; ipsec: strongSwan's xfrm interfaces.
TUNNEL_PREFIXES = ("tun", "tap", "wg", "ppp", "utun", "ipsec", "tailscale", "zt")
LOOPBACK = frozenset({"lo", "lo0"})


def is_tunnel(name: str) -> bool:
    """Whether an interface name is a tunnel's."""
    return name.startswith(TUNNEL_PREFIXES)


class InterfaceWatch:
    """Interface counters at the start of the window, and the names seen so far."""

    def __init__(self) -> None:
        """Start the first window now; interfaces up now have not "appeared"."""
        self._start = host.nic_bytes()
        self._known = set(self._start)

    def appeared(self) -> list[str]:
        """Tunnel interfaces that appeared since the last call (or the start), sorted."""
        names = set(host.nic_bytes())
        new = names - self._known
        # Forget what went away, so a VPN reconnecting with the same name is seen again.
        self._known = names
        return sorted(n for n in new if is_tunnel(n))

    def deltas(self) -> dict[str, dict[str, int]]:
        """Bytes received and sent per interface since the last call, loopback excluded; then
        start the next window."""
        now = host.nic_bytes()
        out: dict[str, dict[str, int]] = {}
        for name, (rx, tx) in sorted(now.items()):
            if name in LOOPBACK:
                continue
            # An interface new in this window counts from zero.
            rx0, tx0 = self._start.get(name, (0, 0))
            out[name] = {"rx_bytes": max(rx - rx0, 0), "tx_bytes": max(tx - tx0, 0)}
        self._start = now
        return out
