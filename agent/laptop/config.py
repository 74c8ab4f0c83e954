"""The laptop agent's configuration (TOML), read strictly: unknown keys are errors, and every
error names the section, the key, the value and the rule (docs/agent.md lists every key).

[agent]   state_dir, control_socket
[hub]     url
[site]    beacon_servers, check_interval_s, max_rtt_ms
[filter]  listen, offsite_upstreams, manage_system_resolver, resolv_conf, tls_ca, timeout_ms,
          captive_max_s
[report]  interval_s, max_spool_mb, max_age_days
[sniffer] enabled, interface
[concern] (nothing yet: the severity is the hub's, [rules.concern])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.filter.addresses import parse_endpoint, parse_upstream, split_upstream_name
from agent.filter.spec import Endpoint
from common.broker_url import broker_url_problem
from common.tomlconfig import Section, load_toml

DEFAULT_STATE_DIR = Path("/var/lib/hedgerow/agent")
DEFAULT_UPSTREAMS = ("tls://9.9.9.9:853#dns.quad9.net", "tls://149.112.112.112:853#dns.quad9.net")


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """How the agent proves it is on site."""

    beacon_servers: tuple[str, ...] = ("system",)  # "system" or "IP:PORT"
    check_interval_s: float = 60.0
    max_rtt_ms: float | None = None  # None: the policy's (default 50 ms)


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """The local filter and how the OS is pointed at it."""

    listen: Endpoint
    offsite_upstreams: tuple[str, ...] = DEFAULT_UPSTREAMS
    manage_system_resolver: bool = True
    resolv_conf: Path = Path("/etc/resolv.conf")
    tls_ca: Path | None = None
    timeout_ms: int = 1500
    captive_max_s: float = 600.0


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """How often the agent summarises, and how much it may hold while the hub is away."""

    interval_s: float = 300.0
    max_spool_mb: int = 64
    max_age_days: int = 30


@dataclass(frozen=True, slots=True)
class SnifferConfig:
    """The packet sniffer child (Linux, CAP_NET_RAW)."""

    enabled: bool = True
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything in the agent's config file."""

    path: Path
    state_dir: Path
    control_socket: Path
    hub_url: str | None
    site: SiteConfig
    filter: FilterConfig
    report: ReportConfig
    sniffer: SnifferConfig

    @property
    def identity_dir(self) -> Path:
        """Where enrolment keeps the device's keys and policy (the state directory itself)."""
        return self.state_dir

    @property
    def spool_dir(self) -> Path:
        """The durable spool of sealed reports."""
        return self.state_dir / "spool"

    @property
    def status_file(self) -> Path:
        """What `status` reads if the socket does not answer (0644, beside the socket: no
        secrets in it, readable by any user)."""
        return self.control_socket.parent / "status.json"

    @property
    def list_cache_dir(self) -> Path:
        """Last good copies of the policy's lists."""
        return self.state_dir / "lists"


def _endpoint(value: str) -> str | None:
    try:
        parse_endpoint(value)
    except ValueError as exc:
        return str(exc)
    return None


def _upstream(value: str) -> str | None:
    if split_upstream_name(value) is not None:
        return None
    try:
        parse_upstream(value)
    except ValueError as exc:
        return f"{exc} (or tls://NAME[:PORT], tls://IP[:PORT][#NAME])"
    return None


def _beacon_server(value: str) -> str | None:
    return None if value == "system" else _endpoint(value)


def load_config(path: Path) -> AgentConfig:
    """Read and check the agent's config file; raises ConfigError naming what is wrong."""
    return parse_config(load_toml(path), path)


def parse_config(raw: dict[str, object], path: Path) -> AgentConfig:
    """The config from a parsed TOML table (ConfigError on the first problem)."""
    source = str(path)
    root = Section("", raw, source)
    agent = _sub(root, "agent", source)
    state_dir = Path(agent.text("state_dir", str(DEFAULT_STATE_DIR)))
    control = agent.optional_text("control_socket")
    agent.done()
    hub = _sub(root, "hub", source)
    hub_url = hub.optional_text("url", check=broker_url_problem)
    hub.done()
    config = AgentConfig(
        path=path,
        state_dir=state_dir,
        control_socket=Path(control) if control else state_dir / "agent.sock",
        hub_url=hub_url,
        site=_site(root, source),
        filter=_filter(root, source),
        report=_report(root, source),
        sniffer=_sniffer(root, source),
    )
    root.done()
    return config


def _sub(root: Section, name: str, source: str) -> Section:
    return Section(name, root.table(name, {}), source)


def _site(root: Section, source: str) -> SiteConfig:
    sec = _sub(root, "site", source)
    servers = sec.text_list("beacon_servers", ["system"])
    if not servers:
        sec.fail("beacon_servers", servers, 'needs at least one server ("system" or "IP:PORT")')
    for server in servers:
        problem = _beacon_server(server)
        if problem:
            sec.fail("beacon_servers", server, f'"system" or {problem}')
    rtt = sec.optional_integer("max_rtt_ms", lo=1, hi=2000)
    config = SiteConfig(
        beacon_servers=tuple(servers),
        check_interval_s=float(sec.integer("check_interval_s", 60, lo=1, hi=3600)),
        max_rtt_ms=float(rtt) if rtt is not None else None,
    )
    sec.done()
    return config


def _filter(root: Section, source: str) -> FilterConfig:
    sec = _sub(root, "filter", source)
    listen = sec.text("listen", "127.0.0.1:53", check=_endpoint)
    upstreams = sec.text_list("offsite_upstreams", list(DEFAULT_UPSTREAMS))
    if not upstreams:
        sec.fail("offsite_upstreams", upstreams, "needs at least one upstream resolver")
    for upstream in upstreams:
        problem = _upstream(upstream)
        if problem:
            sec.fail("offsite_upstreams", upstream, problem)
    ca = sec.optional_text("tls_ca")
    config = FilterConfig(
        listen=parse_endpoint(listen),
        offsite_upstreams=tuple(upstreams),
        manage_system_resolver=sec.flag("manage_system_resolver", True),
        resolv_conf=Path(sec.text("resolv_conf", "/etc/resolv.conf")),
        tls_ca=Path(ca) if ca else None,
        timeout_ms=sec.integer("timeout_ms", 1500, lo=10, hi=60_000),
        captive_max_s=float(sec.integer("captive_max_s", 600, lo=10, hi=3600)),
    )
    sec.done()
    return config


def _report(root: Section, source: str) -> ReportConfig:
    sec = _sub(root, "report", source)
    config = ReportConfig(
        interval_s=float(sec.integer("interval_s", 300, lo=1, hi=86_400)),
        max_spool_mb=sec.integer("max_spool_mb", 64, lo=1, hi=4096),
        max_age_days=sec.integer("max_age_days", 30, lo=1, hi=3650),
    )
    sec.done()
    return config


def _sniffer(root: Section, source: str) -> SnifferConfig:
    sec = _sub(root, "sniffer", source)
    config = SnifferConfig(
        enabled=sec.flag("enabled", True),
        interface=sec.optional_text("interface"),
    )
    sec.done()
    return config
