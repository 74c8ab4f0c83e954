"""What the laptop does: activity summaries and the portable (psutil) bypass baseline.

`ActivitySampler.sample()` is called every ~10 s and returns new `BypassFinding`s;
`ActivitySampler.window(counts_only=...)` returns the summary fields since the last call:

| field | type | meaning | counts_only |
|---|---|---|---|
| `user` | str | the logged-in user (psutil.users(); the most recently started session's) | omitted; also omitted when nobody is logged in |
| `users` | int | how many distinct users are logged in now | same |
| `awake_s` | int | seconds the machine was awake in the window (CLOCK_MONOTONIC's advance; it stops in suspend, CLOCK_BOOTTIME does not) | same |
| `active_s` | int | seconds a user was active (logind IdleHint, else terminal idle as `w` computes it; presence.py), counted between samples | same |
| `processes_new` | dict[str, int] | process name -> how many started in the window | replaced by `processes_new_count` (int): the total |
| `flagged_apps` | list[{"name": str, "count": int}] | flagged processes (VPN clients, Tor, proxies) started in the window | same (app names are not personal) |
| `tunnels` | list[str] | tunnel interfaces (tun*, tap*, wg*, ppp*, utun*...) that appeared in the window | same |
| `interfaces` | dict[str, {"rx_bytes": int, "tx_bytes": int}] | bytes per interface over the window, loopback excluded | same |

Bypass methods found by `sample()`: `dot` (TCP to port 853), `doq` (UDP to 853, 8853 or 784),
`doh` (port 443 to a public encrypted-DNS resolver's address, agent/laptop/data), `dns_elsewhere`
(port 53 to an address not in `allowed_dns()`), `flagged_app` (a flagged process started, or
running when the sampler starts), `tunnel` (a tunnel interface appeared). Nothing sent to an
address in `allowed_dns()` is a bypass, so it must hold our own filter's listen address, the
Pi and our own DoT upstreams' addresses. The same (method, remote, port, process) is reported
once per 10 minutes.
"""

from agent.laptop.activity.findings import BypassFinding, FindingGate
from agent.laptop.activity.sampler import ActivitySampler

__all__ = ["ActivitySampler", "BypassFinding", "FindingGate"]
