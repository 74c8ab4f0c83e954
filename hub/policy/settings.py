"""Policy settings in TOML: [policy] in hub.toml, or DATA/policy/<site>.toml for one site.

[policy]
default_group = "pupils"              # group of devices enrolled without one
class_groups = { staff-laptop = "staff" }  # ...or this group for their class (default shown,
                                      # when a group "staff" exists)
counts_only_classes = ["staff-laptop"]  # these devices report counts, never names
summary_interval_s = 300

[policy.groups.pupils]
block = ["adult", "gambling", "malware", "phishing", "proxy"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.identity import DEVICE_CLASSES
from common.tomlconfig import Section, load_toml
from common.wire.header import valid_name
from hub.config import HubConfig

DEFAULT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pupils", ("adult", "gambling", "malware", "phishing", "proxy")),
    ("staff", ("malware", "phishing")),
)


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """What one group of users may not reach."""

    name: str
    block: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The hub-authored part of a site's policy."""

    groups: tuple[GroupPolicy, ...]
    default_group: str = "pupils"
    counts_only_classes: tuple[str, ...] = ("staff-laptop",)
    summary_interval_s: int = 300
    class_groups: tuple[tuple[str, str], ...] = ()  # (device class, group) pairs

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


def _name(value: str) -> str | None:
    return None if valid_name(value) else "must be 1-63 chars of [a-z0-9._-]"


def parse_policy(table: object, source: str) -> PolicySettings:
    """Read a [policy] table strictly; raises ConfigError naming the key and the rule."""
    sec = Section("policy", table, source)
    default_group = sec.text("default_group", "pupils", check=_name)
    classes = sec.text_list("counts_only_classes", ["staff-laptop"])
    for cls in classes:
        if cls not in DEVICE_CLASSES:
            sec.fail("counts_only_classes", cls, f"must be one of {', '.join(DEVICE_CLASSES)}")
    interval = sec.integer("summary_interval_s", 300, lo=30, hi=86400)
    raw_groups = sec.optional_table("groups")
    groups: list[GroupPolicy] = []
    if raw_groups is None:
        groups = [GroupPolicy(n, b) for n, b in DEFAULT_GROUPS]
    else:
        for name, raw in sorted(raw_groups.items()):
            group = Section(f"policy.groups.{name}", raw, source)
            if not valid_name(name):
                group.fail("", name, "group names must be 1-63 chars of [a-z0-9._-]")
            block = group.text_list("block", [])
            for category in block:
                if not valid_name(category):
                    group.fail("block", category, "categories must be 1-63 chars of [a-z0-9._-]")
            group.done()
            groups.append(GroupPolicy(name, tuple(sorted(set(block)))))
    names = {g.name for g in groups}
    class_groups = _class_groups(sec, names)
    sec.done()
    settings = PolicySettings(tuple(groups), default_group, tuple(classes), interval, class_groups)
    if settings.group(None) is None:
        sec.fail("default_group", default_group, "must name a group in [policy.groups]")
    return settings


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
