"""Policy settings in TOML: [policy] in hub.toml, or DATA/policy/<site>.toml for one site.

[policy]
default_group = "pupils"              # group of devices enrolled without one
class_groups = { staff-laptop = "staff" }  # ...or this group for their class (default shown,
                                      # when a group "staff" exists)
counts_only_classes = ["staff-laptop"]  # these devices report counts, never names
summary_interval_s = 300
blocked_answer = "null"               # the laptop filter's answer to a blocked name

[[policy.lists]]                      # what the laptop's own filter blocks off site
category = "adult"
source = "https://lists.example/adult.txt"

[policy.groups.pupils]
block = ["adult", "gambling", "malware", "phishing", "proxy"]
allow = ["bbc.co.uk"]                 # and safesearch, youtube, block_* and pupils

[policy.agent]
beacon_max_rtt_ms = 50

docs/enrolment.md "Policies" documents every key and the document devices receive.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.errors import ConfigError
from common.filter_rules import blocked_answer_problem, url_problem
from common.identity import DEVICE_CLASSES
from common.text import unsafe
from common.tomlconfig import Section, load_toml, toml_value
from common.wire.header import valid_name
from hub.config import HubConfig

DEFAULT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pupils", ("adult", "gambling", "malware", "phishing", "proxy")),
    ("staff", ("malware", "phishing")),
)
# Groups with these names get SafeSearch, strict YouTube and pupils = true unless they say so.
PUPIL_GROUPS = ("pupils", "guests")
YOUTUBE_MODES = ("off", "moderate", "strict")
# The filter's names (hedgerow-dns's [[lists]] category and allow rules, docs/dns.md).
CATEGORY = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,62}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9_-]{1,63}$")
MAX_LISTS = 200
MAX_SOURCE = 1000  # characters of a list URL
MAX_ALLOW = 1000  # allow entries per group
MAX_FLAGGED_APPS = 200
MAX_APP_NAME = 63
# A signed policy is at most 256 KiB (common.wire.envelope.MAX_ENVELOPE). What these settings
# put in a device's document may use this much; the rest (the hub's keys, about 2 KiB with
# ML-KEM, and 46 bytes per DNS filter's beacon key, the header and the signature) has 64 KiB.
DOCUMENT_BUDGET = 192 * 1024


@dataclass(frozen=True, slots=True)
class ListPolicy:
    """One [[policy.lists]] entry: a category the laptop's own filter fetches and blocks."""

    category: str
    source: str  # https://, or http:// to a loopback address (tests)
    statutory: bool = False
    refresh_h: int = 24

    def document(self) -> dict[str, Any]:
        """Its entry in a device policy's filter.lists."""
        return {
            "category": self.category,
            "source": self.source,
            "statutory": self.statutory,
            "refresh_h": self.refresh_h,
        }


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """What one group of users may not reach, and how the filter treats them."""

    name: str
    block: tuple[str, ...]
    allow: tuple[str, ...] = ()
    safesearch: bool = False
    youtube: str = "off"
    block_encrypted_dns: bool = True
    block_bypass: bool = True
    block_ech: bool = False
    pupils: bool = False

    def filter_document(self) -> dict[str, Any]:
        """Its settings in a device policy's filter.group (`block` is beside, as before)."""
        return {
            "allow": list(self.allow),
            "safesearch": self.safesearch,
            "youtube": self.youtube,
            "block_encrypted_dns": self.block_encrypted_dns,
            "block_bypass": self.block_bypass,
            "block_ech": self.block_ech,
            "pupils": self.pupils,
        }


def default_group_policy(name: str, block: tuple[str, ...] = ()) -> GroupPolicy:
    """A group with nothing written but its block list: pupils and guests filtered strictly."""
    pupils = name in PUPIL_GROUPS
    return GroupPolicy(
        name, block, safesearch=pupils, youtube="strict" if pupils else "off", pupils=pupils
    )


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """[policy.agent]: how the laptop agent works, beyond filtering."""

    beacon_max_rtt_ms: int = 50  # a slower beacon answer is not proof of being on site
    flagged_apps: tuple[str, ...] | None = None  # None: the agent's built-in list

    def document(self) -> dict[str, Any]:
        """A device policy's agent object (flagged_apps omitted when not configured)."""
        doc: dict[str, Any] = {"beacon_max_rtt_ms": self.beacon_max_rtt_ms}
        if self.flagged_apps is not None:
            doc["flagged_apps"] = list(self.flagged_apps)
        return doc


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The hub-authored part of a site's policy."""

    groups: tuple[GroupPolicy, ...]
    default_group: str = "pupils"
    counts_only_classes: tuple[str, ...] = ("staff-laptop",)
    summary_interval_s: int = 300
    class_groups: tuple[tuple[str, str], ...] = ()  # (device class, group) pairs
    lists: tuple[ListPolicy, ...] = ()
    blocked_answer: str = "null"  # "null", "nxdomain" or an IP address
    agent: AgentPolicy = AgentPolicy()

    def group(self, name: str | None) -> GroupPolicy | None:
        """The named group (or the default one), or None if it is not configured."""
        wanted = name or self.default_group
        return next((g for g in self.groups if g.name == wanted), None)

    def defines(self, name: str) -> bool:
        """True if the site's policy has a group of this name."""
        return any(g.name == name for g in self.groups)

    def group_for_class(self, device_class: str) -> str:
        """The group a device of this class gets when its token names none."""
        return dict(self.class_groups).get(device_class, self.default_group)

    def filter_document(self, group: GroupPolicy) -> dict[str, Any]:
        """A device policy's filter object for a device of this group."""
        return {
            "lists": [entry.document() for entry in self.lists],
            "blocked_answer": self.blocked_answer,
            "group": group.filter_document(),
        }


def _name(value: str) -> str | None:
    return None if valid_name(value) else "must be 1-63 chars of [a-z0-9._-]"


def source_problem(source: str) -> str | None:
    """Why a list source is refused, or None: hedgerow-dns's rule for list URLs
    (common/filter_rules.py), and a URL only: a file path means nothing on a laptop."""
    if len(source) > MAX_SOURCE:
        return f"must be at most {MAX_SOURCE} characters"
    if unsafe(source) or any(c.isspace() for c in source):
        return "must be a URL without spaces or control characters"
    try:
        scheme = urlsplit(source).scheme
        if scheme not in ("https", "http"):
            return "must be an https:// URL (the laptop fetches it itself; a file path means nothing there)"
        return url_problem(source)
    except ValueError:
        return "is not a valid URL"


def _category(value: str) -> str | None:
    return None if CATEGORY.fullmatch(value) else "must be a lower-case category name like gambling"


def _list_name(table: object, index: int) -> str:
    """How a message names a [[policy.lists]] entry: by its category when it has a good one,
    as `hedgerow-hub check` cuts entries with problems and the numbers of those after shift."""
    category = table.get("category") if isinstance(table, dict) else None
    if isinstance(category, str) and CATEGORY.fullmatch(category):
        return f"policy.lists category={toml_value(category)}"
    return f"policy.lists #{index + 1}"


def _lists(sec: Section, source: str) -> tuple[ListPolicy, ...]:
    tables = sec.tables("lists")
    if len(tables) > MAX_LISTS:
        sec.fail("lists", f"{len(tables)} lists", f"at most {MAX_LISTS} [[policy.lists]] entries")
    out: list[ListPolicy] = []
    for index, table in enumerate(tables):
        entry = Section(_list_name(table, index), table, source)
        spec = ListPolicy(
            category=entry.text("category", check=_category),
            source=entry.text("source", check=source_problem),
            statutory=entry.flag("statutory", False),
            refresh_h=entry.integer("refresh_h", 24, lo=1, hi=24 * 365),
        )
        entry.done()
        for other in out:
            if (other.category, other.source) == (spec.category, spec.source):
                entry.fail("source", spec.source, f"is listed twice for {spec.category}")
            if other.category == spec.category and other.statutory != spec.statutory:
                entry.fail(
                    "statutory",
                    spec.statutory,
                    f"category {toml_value(spec.category)} is statutory in one list and not in "
                    "another; a category is statutory everywhere or nowhere",
                )
        out.append(spec)
    return tuple(out)


def _allow(group: Section, categories: set[str]) -> tuple[str, ...]:
    allow = group.text_list("allow", [])
    if len(allow) > MAX_ALLOW:
        group.fail("allow", f"{len(allow)} names", f"at most {MAX_ALLOW} names per group")
    out: list[str] = []
    for written in allow:
        name = written.lower().rstrip(".")
        if name in categories:
            group.fail(
                "allow",
                written,
                "allow takes domain names; to stop blocking a category, remove it from block",
            )
        if not name.isascii():
            group.fail(
                "allow", written, "write an international name as its A-labels, e.g. xn--fa-hia.de"
            )
        if not DOMAIN.fullmatch(name):
            group.fail("allow", written, "must be a domain name like bbc.co.uk")
        out.append(name)
    return tuple(sorted(set(out)))


def _youtube(value: str) -> str | None:
    return None if value in YOUTUBE_MODES else f"must be one of {', '.join(YOUTUBE_MODES)}"


def _group(name: str, raw: object, source: str, lists: tuple[ListPolicy, ...]) -> GroupPolicy:
    group = Section(f"policy.groups.{name}", raw, source)
    if not valid_name(name):
        group.fail("", name, "group names must be 1-63 chars of [a-z0-9._-]")
    provided = {entry.category for entry in lists}
    block = group.text_list("block", [])
    for category in block:
        if not valid_name(category):
            group.fail("block", category, "categories must be 1-63 chars of [a-z0-9._-]")
        if lists and category not in provided:
            group.fail(
                "block",
                category,
                f"no [[policy.lists]] entry provides category {toml_value(category)}, so the "
                "laptop's filter cannot block it",
            )
    defaults = default_group_policy(name)
    allow = _allow(group, provided | set(block))
    safesearch = group.flag("safesearch", defaults.safesearch)
    block_bypass = group.flag("block_bypass", defaults.block_bypass)
    policy = GroupPolicy(
        name,
        tuple(sorted(set(block))),
        allow=allow,
        safesearch=safesearch,
        youtube=group.text("youtube", "strict" if safesearch else "off", check=_youtube),
        block_encrypted_dns=group.flag("block_encrypted_dns", block_bypass),
        block_bypass=block_bypass,
        block_ech=group.flag("block_ech", defaults.block_ech),
        pupils=group.flag("pupils", defaults.pupils),
    )
    group.done()
    return policy


def _app(value: str) -> bool:
    return bool(value.strip()) and len(value) <= MAX_APP_NAME and not unsafe(value)


def _agent(sec: Section) -> AgentPolicy:
    agent = sec.section("agent")
    rtt = agent.integer("beacon_max_rtt_ms", 50, lo=10, hi=1000)
    apps = agent.optional_text_list("flagged_apps")
    if apps is not None:
        if len(apps) > MAX_FLAGGED_APPS:
            agent.fail("flagged_apps", f"{len(apps)} names", f"at most {MAX_FLAGGED_APPS} names")
        for app in apps:
            if not _app(app):
                agent.fail(
                    "flagged_apps",
                    app,
                    f"each name must be 1-{MAX_APP_NAME} characters, not blank, without "
                    "control characters",
                )
    agent.done()
    return AgentPolicy(rtt, None if apps is None else tuple(dict.fromkeys(apps)))


def parse_policy(table: object, source: str) -> PolicySettings:
    """Read a [policy] table strictly; raises ConfigError naming the key and the rule."""
    sec = Section("policy", table, source)
    default_group = sec.text("default_group", "pupils", check=_name)
    classes = sec.text_list("counts_only_classes", ["staff-laptop"])
    for cls in classes:
        if cls not in DEVICE_CLASSES:
            sec.fail("counts_only_classes", cls, f"must be one of {', '.join(DEVICE_CLASSES)}")
    interval = sec.integer("summary_interval_s", 300, lo=30, hi=86400)
    blocked_answer = sec.text("blocked_answer", "null", check=blocked_answer_problem)
    lists = _lists(sec, source)
    raw_groups = sec.optional_table("groups")
    groups: list[GroupPolicy] = []
    if raw_groups is None:
        groups = [default_group_policy(n, b) for n, b in DEFAULT_GROUPS]
    else:
        for name, raw in sorted(raw_groups.items()):
            groups.append(_group(name, raw, source, lists))
    names = {g.name for g in groups}
    class_groups = _class_groups(sec, names)
    agent = _agent(sec)
    sec.done()
    settings = PolicySettings(
        groups=tuple(groups),
        default_group=default_group,
        counts_only_classes=tuple(classes),
        summary_interval_s=interval,
        class_groups=class_groups,
        lists=lists,
        blocked_answer=blocked_answer,
        agent=agent,
    )
    if settings.group(None) is None:
        sec.fail("default_group", default_group, "must name a group in [policy.groups]")
    _check_size(settings, source)
    return settings


def document_size(settings: PolicySettings, group: GroupPolicy) -> int:
    """Bytes the settings put in the policy document of a device of this group (canonical
    JSON): every group's block list, the filter and agent objects."""
    part = {
        "groups": {g.name: {"block": list(g.block)} for g in settings.groups},
        "block": list(group.block),
        "filter": settings.filter_document(group),
        "agent": settings.agent.document(),
    }
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


def _check_size(settings: PolicySettings, source: str) -> None:
    largest = max(settings.groups, key=lambda g: document_size(settings, g))
    size = document_size(settings, largest)
    if size > DOCUMENT_BUDGET:
        prefix = f"{source}: " if source else ""
        raise ConfigError(
            f"{prefix}[policy]: a device policy of group {largest.name} would hold {size} bytes "
            f"of lists, groups and allow entries; at most {DOCUMENT_BUDGET} fit in a signed "
            "policy (256 KiB with the hub's keys): use fewer lists or shorter sources, or fewer "
            "allow entries"
        )


def _class_groups(sec: Section, groups: set[str]) -> tuple[tuple[str, str], ...]:
    table = sec.optional_table("class_groups")
    if table is None:
        return (("staff-laptop", "staff"),) if "staff" in groups else ()
    pairs: list[tuple[str, str]] = []
    for device_class, group in sorted(table.items()):
        if device_class not in DEVICE_CLASSES:
            sec.fail("class_groups", device_class, f"classes are {', '.join(DEVICE_CLASSES)}")
        if not isinstance(group, str) or group not in groups:
            sec.fail(f"class_groups.{device_class}", group, "must name a group in [policy.groups]")
        pairs.append((device_class, str(group)))
    return tuple(pairs)


def site_policy_file(config: HubConfig, site: str) -> Path:
    """DATA/policy/<site>.toml: when present it replaces [policy] of hub.toml for that site."""
    return config.data / "policy" / f"{site}.toml"


def load_policy_settings(config: HubConfig, site: str) -> PolicySettings:
    """The policy settings for one site."""
    path = site_policy_file(config, site)
    if path.exists():
        root = Section("", load_toml(path), str(path))
        settings = parse_policy(root.table("policy"), str(path))
        root.done()
        return settings
    return parse_policy(config.table("policy"), str(config.path))
