"""The systemd-resolved adapter: on every link with a default route, our filter as the only DNS
server, `~.` as the routing domain (every name goes to that link) and the link a default route
for DNS, set with `resolvectl`; `resolvectl revert` undoes it.

NetworkManager pushes its per-link DNS into resolved through the same API after a Wi-Fi switch,
replacing ours: apply() notices, remembers what it pushed (the network's resolvers) and sets
ours again. Reverting a link NetworkManager manages clears what it pushed, so restore() puts
the remembered servers back on a link left with none. The `Runner` is the boundary to the
resolvectl process; unit tests replace it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.laptop.resolver.base import ResolverError, StateFile
from agent.laptop.resolver.resolvconf import nameservers

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], str]
STATE_NAME = "systemd-resolved.json"
STUB = ("127.0.0.53", 53)  # resolved's stub listener, where /etc/resolv.conf usually points
ROUTE_ALL = "~."
RTF_UP, RTF_REJECT = 0x0001, 0x0200


def run_command(argv: Sequence[str]) -> str:
    """Run a command and return its output; ResolverError naming it if it fails."""
    # No colours and no wrapping: the output is parsed.
    env = {**os.environ, "SYSTEMD_COLORS": "0", "COLUMNS": "1000", "SYSTEMD_PAGER": ""}
    try:
        done = subprocess.run(
            list(argv), check=True, capture_output=True, text=True, timeout=10, env=env
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip() or f"exit status {exc.returncode}"
        raise ResolverError(f"{' '.join(argv)}: {detail}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise ResolverError(f"{' '.join(argv)}: {exc}") from exc
    return done.stdout


def link_values(output: str) -> list[str]:
    """The values resolvectl prints for one link ("Link 3 (wlan0): 192.168.1.1 ::1", wrapped
    lines included); [] when it names none."""
    values: list[str] = []
    for line in output.splitlines():
        if line.startswith(("Link ", "Global")):
            _, _, line = line.partition(":")
        values += line.split()
    return values


def parse_server(text: str) -> tuple[str, int]:
    """(address, port) of a server as resolvectl writes it: "192.168.1.1", "127.0.0.1:5353",
    "fe80::1%wlan0", "[::1]:5353", "1.1.1.1#cloudflare-dns.com"."""
    text = text.split("#", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, 53
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError as exc:
        raise ResolverError(
            f"resolvectl printed a server that is not an address: {text!r}"
        ) from exc
    return host, port


def server_text(host: str, port: int) -> str:
    """How resolvectl takes a server with its port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_route(text: str) -> list[str]:
    """Links with an IPv4 default route, from /proc/net/route."""
    links: list[str] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            flags = int(fields[3], 16)
            if flags & RTF_UP and not flags & RTF_REJECT and fields[0] not in links:
                links.append(fields[0])
    return links


def parse_ipv6_route(text: str) -> list[str]:
    """Links with an IPv6 default route, from /proc/net/ipv6_route (not the kernel's
    unreachable default on lo)."""
    links: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00":
            flags = int(fields[8], 16)
            name = fields[9]
            if flags & RTF_UP and not flags & RTF_REJECT and name != "lo" and name not in links:
                links.append(name)
    return links


def default_route_links(
    route: Path = Path("/proc/net/route"), route6: Path = Path("/proc/net/ipv6_route")
) -> list[str]:
    """The links that carry a default route now, IPv4 first."""
    links: list[str] = []
    for path, parse in ((route, parse_route), (route6, parse_ipv6_route)):
        try:
            found = parse(path.read_text("ascii", "replace"))
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
        except OSError as exc:
            raise ResolverError(f"{path}: cannot read the routes: {exc}") from exc
        links += [name for name in found if name not in links]
    return links


class SystemdResolved:
    """Points systemd-resolved's default-route links at our filter."""

    name = "systemd-resolved"

    def __init__(
        self,
        state_dir: Path,
        *,
        runner: Runner = run_command,
        links: Callable[[], list[str]] = default_route_links,
        resolv_conf: Path = Path("/etc/resolv.conf"),
    ) -> None:
        self.state = StateFile(state_dir / STATE_NAME)
        self.runner = runner
        self.links = links
        self.resolv_conf = resolv_conf

    def apply(self, host: str, port: int) -> bool:
        """Put our server and `~.` on every default-route link not already ours; True if it
        changed one."""
        ours = (host, port)
        state = self.state.load() or {"adapter": self.name, "links": {}}
        # Never remember ourselves as the network's: neither this address nor one used before.
        mine = {ours, (state.get("host"), state.get("port"))}
        state.update(host=host, port=port)
        saved: dict[str, Any] = state["links"]
        changed = False
        for link in self.links():
            servers = self._servers(link)
            if servers == [ours] and ROUTE_ALL in self._values("domain", link):
                continue
            theirs = [s for s in servers if s not in mine]
            if theirs or link not in saved:
                # What the network (NetworkManager, networkd) gave this link just now.
                saved[link] = {
                    "dns": [server_text(*s) for s in theirs],
                    "domains": [d for d in self._values("domain", link) if d != ROUTE_ALL],
                    "default_route": self._values("default-route", link)[:1],
                }
            # Recorded before the change: a crash in between still leaves the way back.
            self.state.save(state)
            self._run("dns", link, server_text(host, port))
            self._run("domain", link, ROUTE_ALL)
            self._run("default-route", link, "yes")
            log.info("%s: DNS now %s (was %s)", link, server_text(host, port), saved[link]["dns"])
            changed = True
        return changed

    def restore(self) -> None:
        """Revert every link still ours; a link left with no servers gets the network's back."""
        state = self.state.load()
        if state is None:
            return
        ours = (state.get("host"), state.get("port"))
        for link, saved in dict(state.get("links", {})).items():
            try:
                if self._servers(link) != [ours]:
                    log.info("%s was changed since; leaving it", link)
                    continue
                self._run("revert", link)
                # NetworkManager set its servers through the API revert just cleared.
                if saved.get("dns") and not self._servers(link):
                    self._run("dns", link, *saved["dns"])
                    if saved.get("domains"):
                        self._run("domain", link, *saved["domains"])
                    if saved.get("default_route"):
                        self._run("default-route", link, *saved["default_route"])
                log.info("%s reverted", link)
            except ResolverError as exc:
                log.warning("%s: cannot revert (gone?): %s", link, exc)
        self.state.remove()

    def cleanup_leftovers(self) -> bool:
        """Revert the links a crashed run left pointing at us."""
        if self.state.load() is None:
            return False
        log.warning("systemd-resolved: undoing what a previous run left")
        self.restore()
        return True

    def current(self) -> str:
        """The word "ours" when every default-route link asks only us for everything, else the
        servers of the links that do not."""
        state = self.state.load()
        ours = (state.get("host"), state.get("port")) if state else None
        others: list[str] = []
        links = self.links()
        for link in links:
            servers = self._servers(link)
            theirs = [_shown(*s) for s in servers if s != ours]
            if theirs:
                others += theirs
            elif not servers:
                others.append(f"{link}: no servers")
            elif ROUTE_ALL not in self._values("domain", link):
                others.append(f"{link}: ours without {ROUTE_ALL}")
        if not links:
            return "none"
        return ", ".join(others) if others else "ours"

    def network_resolvers(self) -> list[tuple[str, int]]:
        """What the network gave the default-route links: live when they are not ours (just
        rewritten), else what apply() remembered."""
        state = self.state.load()
        ours = (state.get("host"), state.get("port")) if state else None
        saved: dict[str, Any] = state.get("links", {}) if state else {}
        found: list[tuple[str, int]] = []
        for link in self.links():
            servers = [s for s in self._servers(link) if s != ours]
            if not servers and link in saved:
                servers = [parse_server(text) for text in saved[link].get("dns", [])]
            found += [s for s in servers if s not in found]
        return found

    def probe_address(self) -> tuple[str, int]:
        """Where programs send queries: /etc/resolv.conf's first nameserver, normally the
        stub at 127.0.0.53 (a resolv.conf in "uplink" mode names servers directly)."""
        try:
            servers = nameservers(self.resolv_conf.read_bytes())
        except OSError:
            return STUB
        return (servers[0], 53) if servers else ("127.0.0.1", 53)

    def _servers(self, link: str) -> list[tuple[str, int]]:
        return [parse_server(text) for text in self._values("dns", link)]

    def _values(self, verb: str, link: str) -> list[str]:
        return link_values(self.runner(["resolvectl", verb, link]))

    def _run(self, verb: str, link: str, *values: str) -> None:
        self.runner(["resolvectl", verb, link, *values])


def _shown(host: str, port: int) -> str:
    return host if port == 53 else server_text(host, port)
