"""Reading hedgerow-dns.toml strictly: unknown keys, bad values and inconsistent policy are
ConfigErrors naming the section, the key, the value and the rule broken."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from agent.dns.config.model import BeaconConfig, DnsConfig, ReportConfig, ServerConfig
from agent.dns.paths import LIST_CACHE_DIR
from agent.filter.lists.model import ListError, ListSpec, is_url, url_problem
from agent.filter.schedule import Schedule, ScheduleError, parse_schedule
from agent.filter.spec import (
    DEFAULT_CACHE_ENTRIES,
    CacheSpec,
    Endpoint,
    GroupSpec,
    Network,
    UpstreamServer,
    UpstreamSpec,
)
from common.tomlconfig import Section, load_toml

NAME = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,62}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9_-]{1,63}$")
PRIVATE = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
YOUTUBE_MODES = ("strict", "moderate", "off")


def parse_endpoint(text: str) -> Endpoint:
    """'1.2.3.4:53' or '[::1]:53' (an IP literal, not a host name); raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("must be IP:PORT or [IPv6]:PORT with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:53")
    ipaddress.ip_address(host)
    return Endpoint(host, int(port_text), text)


def _upstream(text: str) -> UpstreamServer:
    tls = text.startswith("tls://")
    rest = text[len("tls://") :] if tls else text
    rest, _, server_name = rest.partition("#")
    if tls and rest.rpartition(":")[1] == "":
        rest += ":853"
    endpoint = parse_endpoint(rest)
    return UpstreamServer(endpoint.host, endpoint.port, tls, server_name or None, text)


def _problem(check: Callable[[str], object], value: str) -> str | None:
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None


def _networks(sec: Section, key: str, default: list[str] | None = None) -> tuple[Network, ...]:
    values = sec.text_list(key, default) if default is not None else sec.text_list(key)
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            sec.fail(key, value, f"not a CIDR network: {exc}")
    return tuple(out)


def _names(sec: Section, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    values = sec.text_list(key, [])
    for value in values:
        if not pattern.fullmatch(value):
            sec.fail(key, value, f"must be {what}")
    return tuple(values)


def _endpoints(sec: Section, key: str, default: list[str]) -> tuple[Endpoint, ...]:
    values = sec.text_list(key, default)
    for value in values:
        problem = _problem(parse_endpoint, value)
        if problem:
            sec.fail(key, value, problem)
    if not values:
        sec.fail(key, values, "needs at least one address")
    return tuple(parse_endpoint(v) for v in values)


def _server(sec: Section) -> ServerConfig:
    metrics_text = sec.text("metrics", "", lambda v: _problem(parse_endpoint, v) if v else None)
    config = ServerConfig(
        listen=_endpoints(sec, "listen", ["0.0.0.0:53", "[::]:53"]),
        allow_clients=_networks(sec, "allow_clients", list(PRIVATE)),
        rate_limit_qps=sec.integer("rate_limit_qps", 200, 0, 10_000_000),
        metrics=parse_endpoint(metrics_text) if metrics_text else None,
        tcp_idle_timeout_s=sec.integer("tcp_idle_timeout_s", 10, 1, 3600),
        max_tcp_connections=sec.integer("max_tcp_connections", 256, 1, 100_000),
        max_udp_size=sec.integer("max_udp_size", 1232, 512, 4096),
        udp_batch=sec.integer("udp_batch", 32, 0, 1024),
        blocked_ttl_s=sec.integer("blocked_ttl_s", 60, 0, 86_400),
        list_cache_dir=Path(sec.text("list_cache_dir", str(LIST_CACHE_DIR))),
    )
    sec.done()
    return config


def _upstream_config(sec: Section) -> UpstreamSpec:
    values = sec.text_list("servers")
    if not values:
        sec.fail("servers", values, "needs at least one upstream resolver")
    for value in values:
        problem = _problem(_upstream, value)
        if problem:
            sec.fail("servers", value, problem)
    ca = sec.text("tls_ca", "")
    config = UpstreamSpec(
        servers=tuple(_upstream(v) for v in values),
        timeout_ms=sec.integer("timeout_ms", 1500, 10, 60_000),
        tls_ca=Path(ca) if ca else None,
    )
    sec.done()
    return config


def _cache(sec: Section) -> CacheSpec:
    config = CacheSpec(
        max_entries=sec.integer("max_entries", DEFAULT_CACHE_ENTRIES, 0, 100_000_000),
        max_ttl_s=sec.integer("max_ttl_s", 86_400, 0, 604_800),
    )
    sec.done()
    return config


def _source(value: str) -> str | None:
    if is_url(value):
        return url_problem(value)
    if "://" in value:
        return "must be a file path or an https:// URL"
    return None if value else "must not be empty"


def _lists(root: Section, source: str) -> tuple[ListSpec, ...]:
    out: list[ListSpec] = []
    for index, table in enumerate(root.tables("lists")):
        sec = Section(f"lists #{index + 1}", table, source)
        category = sec.text(
            "category",
            check=lambda v: None if NAME.fullmatch(v) else "must be a lower-case name like gambling",
        )
        source_text = sec.text("source", check=_source)
        statutory = sec.flag("statutory", False)
        refresh_h = sec.integer("refresh_h", 24, 1, 24 * 365)
        try:
            spec = ListSpec(category, source_text, statutory, refresh_h)
        except ListError as exc:
            sec.fail("source", source_text, str(exc))
        sec.done()
        for other in out:
            if other.category == spec.category and other.statutory != spec.statutory:
                sec.fail(
                    "statutory",
                    spec.statutory,
                    f"category {spec.category!r} is statutory in one list and not in another; a category is statutory everywhere or nowhere",
                )
        out.append(spec)
    return tuple(out)


def _schedule(sec: Section, block: tuple[str, ...]) -> tuple[tuple[str, Schedule], ...]:
    raw = sec.table("schedule", {})
    out: list[tuple[str, Schedule]] = []
    for category, text in raw.items():
        key = f"schedule.{category}"
        if category not in block:
            sec.fail(key, text, f"category {category!r} is not in this group's block list")
        if not isinstance(text, str):
            sec.fail(key, text, "must be a string like 'mon-fri 08:00-16:00'")
        try:
            out.append((category, parse_schedule(text)))
        except ScheduleError as exc:
            sec.fail(key, text, str(exc))
    return tuple(out)


def _group(
    name: str, table: object, source: str, known: tuple[str, ...], statutory: frozenset[str]
) -> GroupSpec:
    sec = Section(f"groups.{name}", table, source)
    if not NAME.fullmatch(name):
        sec.fail("", name, "a group name must be lower-case letters, digits, '_' or '-'")
    block = _names(sec, "block", NAME, "a category name")
    for category in block:
        if category not in known:
            sec.fail("block", category, f"no [[lists]] entry provides category {category!r}")
    allow = tuple(a.lower().rstrip(".") for a in sec.text_list("allow", []))
    for entry in allow:
        if entry in statutory:
            sec.fail(
                "allow",
                entry,
                "is a statutory category: it is blocked for every group and can never be allowed",
            )
        if entry in known:
            sec.fail(
                "allow",
                entry,
                "allow takes domain names; to stop blocking a category, remove it from block",
            )
        if not DOMAIN.fullmatch(entry):
            sec.fail("allow", entry, "must be a domain name like bbc.co.uk")
    safesearch = sec.flag("safesearch", False)
    youtube = sec.text(
        "youtube",
        "strict" if safesearch else "off",
        lambda v: None if v in YOUTUBE_MODES else f"must be one of {', '.join(YOUTUBE_MODES)}",
    )
    config = GroupSpec(
        name=name,
        clients=_networks(sec, "clients", []),
        block=block,
        allow=allow,
        safesearch=safesearch,
        youtube=youtube,
        block_ech=sec.flag("block_ech", False),
        block_bypass=sec.flag("block_bypass", True),
        schedule=_schedule(sec, block),
    )
    sec.done()
    return config


def _blocked_answer(value: str) -> str | None:
    if value in ("null", "nxdomain"):
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be null, nxdomain or the IP address of a block page"
    return None


def _broker_url(value: str) -> str | None:
    url = urlsplit(value)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        return "must be mqtts://host:port (or mqtt://127.0.0.1:port on loopback)"
    if url.scheme == "mqtt" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "plain mqtt:// is allowed only on loopback; use mqtts:// (TLS)"
    return None


def _report(sec: Section) -> ReportConfig:
    hub = sec.text("hub", check=_broker_url)
    config = ReportConfig(
        hub=hub,
        identity=Path(sec.text("identity", "/var/lib/hedgerow/dns")),
        interval_s=sec.integer("interval_s", 300, 10, 86_400),
        immediate=_names(sec, "immediate", NAME, "a category name"),
        resend_after_s=sec.integer("resend_after_s", 60, 1, 3_600),
    )
    sec.done()
    return config


def _check_groups(root: Section, groups: list[GroupSpec], allow: tuple[Network, ...]) -> None:
    seen: dict[Network, str] = {}
    for group in groups:
        for net in group.clients:
            if net in seen:
                root.fail(
                    f"groups.{group.name}",
                    str(net),
                    f"clients range is also in group {seen[net]!r}; each range belongs to one group",
                )
            seen[net] = group.name
            if not any(net.version == a.version and net.subnet_of(a) for a in allow):  # type: ignore[arg-type]
                root.fail(
                    f"groups.{group.name}",
                    str(net),
                    "clients range is not inside [server] allow_clients, so it would be refused",
                )


def load_config(path: Path) -> DnsConfig:
    """Read and validate a hedgerow-dns config file; raises ConfigError naming what is wrong."""
    path = Path(path)
    source = str(path)
    root = Section("", load_toml(path), source)
    server = _server(Section("server", root.table("server", {}), source))
    upstream = _upstream_config(Section("upstream", root.table("upstream"), source))
    cache = _cache(Section("cache", root.table("cache", {}), source))
    lists = _lists(root, source)
    known = tuple(dict.fromkeys(spec.category for spec in lists))
    statutory = frozenset(spec.category for spec in lists if spec.statutory)
    raw_groups = root.table("groups", {})
    groups = [_group(n, t, source, known, statutory) for n, t in raw_groups.items()]
    if not groups:
        groups = [GroupSpec(name="default", clients=())]
    _check_groups(root, groups, server.allow_clients)
    default_sec = Section("default", root.table("default", {}), source)
    names = [g.name for g in groups]
    default_group = default_sec.optional_text(
        "group", lambda v: None if v in names else f"no [groups.{v}] is defined"
    )
    if default_group is None and len(names) == 1:
        default_group = names[0]
    if default_group is None:
        default_sec.fail("group", None, "is required when there is more than one group")
    blocked = default_sec.text("blocked_answer", "null", _blocked_answer)
    default_sec.done()
    report = None
    if root.has("report"):
        report = _report(Section("report", root.table("report"), source))
    beacon = None
    if root.has("beacon"):
        bsec = Section("beacon", root.table("beacon"), source)
        site = bsec.text(
            "site",
            check=lambda v: (
                None if NAME.fullmatch(v) else "must be a lower-case site id like cape-primary"
            ),
        )
        fallback = str(report.identity) if report else "/var/lib/hedgerow/dns"
        beacon = BeaconConfig(site, Path(bsec.text("identity", fallback)))
        bsec.done()
    root.done()
    return DnsConfig(
        path=path,
        server=server,
        upstream=upstream,
        cache=cache,
        lists=lists,
        groups=tuple(groups),
        default_group=default_group,
        blocked_answer=blocked,
        report=report,
        beacon=beacon,
    )
