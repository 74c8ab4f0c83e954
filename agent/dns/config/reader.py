"""Reading hedgerow-dns.toml strictly: unknown keys, bad values and inconsistent policy are
ConfigErrors naming the section, the key, the value (as TOML writes it) and the rule broken.

`check` reads on past an error (common.tomlconfig.every_problem) to report every problem at
once; a `Recovery` keeps its later messages true to the file as written."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from agent.dns.config.clients import read_clients
from agent.dns.config.model import BeaconConfig, DnsConfig, ReportConfig, ServerConfig
from agent.dns.paths import LIST_CACHE_DIR
from agent.filter.addresses import parse_endpoint, parse_upstream
from agent.filter.lists.model import ListError, ListSpec, is_url
from agent.filter.schedule import Schedule, ScheduleError, parse_schedule
from agent.filter.spec import (
    CacheSpec,
    Endpoint,
    GroupSpec,
    Network,
    UpstreamServer,
    UpstreamSpec,
)
from common.broker_url import broker_url_problem
from common.filter_rules import blocked_answer_problem, url_problem
from common.tomlconfig import FieldError, Section, load_toml, toml_value

NAME = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,62}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9_-]{1,63}$")
PRIVATE = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
YOUTUBE_MODES = ("strict", "moderate", "off")
# Groups named like this hold no pupils unless they say `pupils = true` (docs/dns.md).
STAFF_NAME = re.compile(r"staff|teacher|admin")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the file said before `check` cut its bad keys and tables out, so the problems
    found after a cut still read true: each [[lists]] table's number in the file (by id), every
    category a [[lists]] entry names (a group may block one whose list was cut), and each
    group's block as written (a schedule may name a category whose block entry was cut)."""

    positions: dict[int, int] = field(default_factory=dict)
    declared: frozenset[str] = frozenset()
    blocks: dict[str, frozenset[str]] = field(default_factory=dict)  # group -> block as written

    @classmethod
    def of(cls, raw: dict[str, object]) -> Recovery:
        """Take note of `raw` as parsed, before anything is cut."""
        tables = raw.get("lists")
        tables = tables if isinstance(tables, list) else []
        groups = raw.get("groups")
        groups = groups if isinstance(groups, dict) else {}
        return cls(
            positions={id(t): i + 1 for i, t in enumerate(tables)},
            declared=frozenset(
                t["category"]
                for t in tables
                if isinstance(t, dict) and isinstance(t.get("category"), str)
            ),
            blocks={
                name: frozenset(v for v in g.get("block", []) if isinstance(v, str))
                for name, g in groups.items()
                if isinstance(g, dict) and isinstance(g.get("block", []), list)
            },
        )


def _upstream(text: str) -> UpstreamServer:
    return parse_upstream(text)


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
        rate_limit_prefix_qps=sec.integer("rate_limit_prefix_qps", 2000, 0, 10_000_000),
        rate_limit_ipv4_prefix=sec.integer("rate_limit_ipv4_prefix", 24, 8, 32),
        rate_limit_ipv6_prefix=sec.integer("rate_limit_ipv6_prefix", 56, 32, 128),
        metrics=parse_endpoint(metrics_text) if metrics_text else None,
        tcp_idle_timeout_s=sec.integer("tcp_idle_timeout_s", 10, 1, 3600),
        max_tcp_connections=sec.integer("max_tcp_connections", 256, 1, 100_000),
        max_tcp_per_client=sec.integer("max_tcp_per_client", 16, 1, 100_000),
        tcp_message_timeout_s=sec.integer("tcp_message_timeout_s", 2, 1, 60),
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


# The school resolver's default answer cache: larger than the engine's (DEFAULT_CACHE_ENTRIES,
# what the laptop agent keeps), since a whole school's names pass through it. About 6.5 MB; the
# cold mix with 1,000,000 listed names peaked at 60.6 MiB with it, against 64 MB, and ran 4 %
# faster than with 10,000 entries, which sent more of it upstream (docs/benchmarks.md).
SCHOOL_CACHE_ENTRIES = 16_000


def _cache(sec: Section) -> CacheSpec:
    config = CacheSpec(
        max_entries=sec.integer("max_entries", SCHOOL_CACHE_ENTRIES, 0, 100_000_000),
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


def _lists(root: Section, source: str, recovery: Recovery) -> tuple[ListSpec, ...]:
    out: list[ListSpec] = []
    for index, table in enumerate(root.tables("lists")):
        sec = Section(f"lists #{recovery.positions.get(id(table), index + 1)}", table, source)
        category = sec.text(
            "category",
            check=lambda v: (
                None if NAME.fullmatch(v) else "must be a lower-case name like gambling"
            ),
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
                    f"category {toml_value(spec.category)} is statutory in one list and not in "
                    "another; a category is statutory everywhere or nowhere",
                )
        out.append(spec)
    return tuple(out)


def _schedule(
    sec: Section, block: tuple[str, ...], written: frozenset[str] = frozenset()
) -> tuple[tuple[str, Schedule], ...]:
    """The group's schedules; `written` is its block as the file wrote it, for check: a
    category check cut from block for a problem of its own is not a second problem here."""
    raw = sec.table("schedule", {})
    out: list[tuple[str, Schedule]] = []

    def fail(category: str, text: object, rule: str) -> NoReturn:
        try:
            sec.fail(f"schedule.{category}", text, rule)
        except FieldError as exc:  # about the schedule table's key: check cuts only that one
            raise FieldError(str(exc), raw, category) from None

    for category, text in raw.items():
        if category not in block and category not in written:
            fail(
                category, text, f"category {toml_value(category)} is not in this group's block list"
            )
        if not isinstance(text, str):
            fail(category, text, 'must be a string like "mon-fri 08:00-16:00"')
        try:
            out.append((category, parse_schedule(text)))
        except ScheduleError as exc:
            fail(category, text, str(exc))
    return tuple(out)


def _group(
    name: str,
    table: object,
    source: str,
    known: tuple[str, ...],
    statutory: frozenset[str],
    recovery: Recovery | None = None,
) -> GroupSpec:
    recovery = recovery or Recovery()
    sec = Section(f"groups.{name}", table, source)
    if not NAME.fullmatch(name):
        sec.fail("", name, "a group name must be lower-case letters, digits, '_' or '-'")
    block = _names(sec, "block", NAME, "a category name")
    for category in block:
        if category not in known and category not in recovery.declared:
            sec.fail(
                "block", category, f"no [[lists]] entry provides category {toml_value(category)}"
            )
    # A category whose [[lists]] entry check cut for a problem of its own: already reported.
    named, block = block, tuple(c for c in block if c in known)
    allow = tuple(_allow_name(a) for a in sec.text_list("allow", []))
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
    block_bypass = sec.flag("block_bypass", True)
    config = GroupSpec(
        name=name,
        clients=_networks(sec, "clients", []),
        block=block,
        allow=allow,
        safesearch=safesearch,
        youtube=youtube,
        block_ech=sec.flag("block_ech", False),
        block_bypass=block_bypass,
        block_encrypted_dns=sec.flag("block_encrypted_dns", block_bypass),
        pupils=sec.flag("pupils", STAFF_NAME.search(name) is None),
        schedule=tuple(
            s
            for s in _schedule(sec, named, recovery.blocks.get(name, frozenset()))
            if s[0] in block
        ),
    )
    sec.done()
    return config


def _report(sec: Section) -> ReportConfig:
    hub = sec.text("hub", check=broker_url_problem)
    config = ReportConfig(
        hub=hub,
        identity=Path(sec.text("identity", "/var/lib/hedgerow/dns")),
        interval_s=sec.integer("interval_s", 300, 10, 86_400),
        immediate=_names(sec, "immediate", NAME, "a category name"),
        resend_after_s=sec.integer("resend_after_s", 60, 1, 3_600),
    )
    sec.done()
    return config


def _check_groups(
    raw_groups: dict[str, object], source: str, groups: list[GroupSpec], allow: tuple[Network, ...]
) -> None:
    seen: dict[Network, str] = {}
    for group in groups:
        # The group's own table, so that check can cut this key and read on.
        sec = Section(f"groups.{group.name}", raw_groups.get(group.name, {}), source)
        for net in group.clients:
            if net in seen:
                sec.fail(
                    "clients",
                    str(net),
                    f"this range is also in [groups.{seen[net]}]; each range belongs to one group",
                )
            seen[net] = group.name
            if not any(net.version == a.version and net.subnet_of(a) for a in allow):  # type: ignore[arg-type]
                sec.fail(
                    "clients",
                    str(net),
                    "this range is not inside [server] allow_clients, so it would be refused",
                )


def load_config(path: Path) -> DnsConfig:
    """Read and validate a hedgerow-dns config file; raises ConfigError naming what is wrong."""
    path = Path(path)
    return parse_config(load_toml(path), path)


def parse_config(raw: dict[str, object], path: Path, recovery: Recovery | None = None) -> DnsConfig:
    """Validate hedgerow-dns.toml as parsed from `path`; raises ConfigError (a FieldError where
    the problem is one key of one table) naming what is wrong."""
    recovery = recovery or Recovery()
    source = str(path)
    root = Section("", raw, source)
    server = _server(Section("server", root.table("server", {}), source))
    upstream = _upstream_config(Section("upstream", root.table("upstream"), source))
    cache = _cache(Section("cache", root.table("cache", {}), source))
    lists = _lists(root, source, recovery)
    known = tuple(dict.fromkeys(spec.category for spec in lists))
    statutory = frozenset(spec.category for spec in lists if spec.statutory)
    raw_groups = root.table("groups", {})
    groups = [_group(n, t, source, known, statutory, recovery) for n, t in raw_groups.items()]
    if not groups:
        groups = [GroupSpec(name="default", clients=())]
    _check_groups(raw_groups, source, groups, server.allow_clients)
    default_sec = Section("default", root.table("default", {}), source)
    names = [g.name for g in groups]
    default_group = default_sec.optional_text(
        "group", lambda v: None if v in names else f"no [groups.{v}] is defined"
    )
    if default_group is None and len(names) == 1:
        default_group = names[0]
    if default_group is None:
        default_sec.fail("group", None, "is required when there is more than one group")
    blocked = default_sec.text("blocked_answer", "null", blocked_answer_problem)
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
    clients = read_clients(root)
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
        clients=clients,
    )


def _allow_name(text: str) -> str:
    """An allow entry as lists hold names: an international name as its A-labels (IDNA 2008,
    UTS #46, as browsers ask: `faß.de` is `xn--fa-hia.de`); left as written if it is not one,
    for the checks that follow to name it."""
    name = text.lower().rstrip(".")
    if name.isascii():
        return name
    from agent.filter.lists.names import to_ascii

    return to_ascii(name) or name
