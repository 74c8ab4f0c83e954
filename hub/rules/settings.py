"""The [rules] section of hub.toml: typed, strict, frozen (docs/alerts.md lists every key).

Severities are 1 (information) to 5 (a child may be at risk now); 0 turns an alert off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.categories import (
    BLOCKED_CONTENT,
    BYPASS,
    BYPASS_SEVERITY,
    NOT_BLOCKS,
    canonical,
    defaults,
    lookup,
    shared_names,
)
from common.tomlconfig import Section
from common.wire.errors import Reason
from hub.alerts import AlertPolicy
from hub.config import HubConfig
from hub.rules.hours import Hours, parse_hours

_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
URGENT = 4  # severities from here up alert on the first attempt by default
NIGHT = Hours(22 * 60, 6 * 60)


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """How blocked attempts in one category become an alert: N attempts in M minutes."""

    severity: int
    attempts: int
    minutes: int


@dataclass(frozen=True, slots=True)
class OffsiteRule:
    """offsite_use: a laptop reporting from off site."""

    enabled: bool = True
    pupil_severity: int = 3
    pupil_night_severity: int = 4
    night: Hours = NIGHT
    staff_severity: int = 1
    staff_hours: Hours | None = None  # when set, off-site use outside it is out of hours
    staff_out_of_hours_severity: int = 3


# The shared vocabulary's defaults (common/categories.py, docs/categories.md).
DEFAULT_CATEGORY_SEVERITY: Mapping[str, int] = MappingProxyType(
    {c.name: c.severity for c in defaults(BLOCKED_CONTENT)}
)
DEFAULT_BYPASS_CATEGORIES = tuple(c.name for c in defaults(BYPASS))


@dataclass(frozen=True, slots=True)
class BlockedRule:
    """blocked_content: blocked attempts by category, each with a severity and a threshold."""

    enabled: bool = True
    severities: Mapping[str, int] = field(default_factory=lambda: DEFAULT_CATEGORY_SEVERITY)
    thresholds: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # category -> (attempts, minutes), where not the default for its severity
    other_severity: int = 0  # categories not named
    urgent_attempts: int = 1  # default threshold for severity >= 4
    urgent_minutes: int = 1
    attempts: int = 3  # default threshold for severity 1..3
    minutes: int = 10

    def category(self, name: str) -> CategoryRule:
        """The rule for a category or its alias (severity 0: no alert)."""
        name = canonical(name)
        severity = self.severities.get(name, self.other_severity)
        default = (
            (self.urgent_attempts, self.urgent_minutes)
            if severity >= URGENT
            else (self.attempts, self.minutes)
        )
        attempts, minutes = self.thresholds.get(name, default)
        return CategoryRule(severity, attempts, minutes)


@dataclass(frozen=True, slots=True)
class BypassRule:
    """bypass: attempts to get round the filter (the filter's anti-bypass names, DoH, DoT, VPN,
    proxies, Tor; hard-coded DNS and the like from the laptop agent)."""

    enabled: bool = True
    severity: int = BYPASS_SEVERITY
    categories: tuple[str, ...] = DEFAULT_BYPASS_CATEGORIES


@dataclass(frozen=True, slots=True)
class TamperRule:
    """tamper: the agent or filter stopped, switched off, redirected or out of date."""

    enabled: bool = True
    last_will_severity: int = 2
    last_will_grace_minutes: int = 10  # a will followed by reports within this is no alert
    filter_disabled_severity: int = 4
    resolver_changed_severity: int = 4
    clock_skew_severity: int = 3
    clock_skew_minutes: int = 5
    policy_stale_severity: int = 2
    policy_stale_hours: int = 24


@dataclass(frozen=True, slots=True)
class SilentRule:
    """silent_device: nothing heard from a device for too long."""

    enabled: bool = True
    laptop_days: int = 3
    laptop_severity: int = 2
    sinkhole_minutes: int = 10
    sinkhole_severity: int = 4


@dataclass(frozen=True, slots=True)
class HealthRule:
    """health: a device says part of its filtering is not working (a list it cannot load, a
    laptop agent's part that failed, reports it had to drop)."""

    enabled: bool = True
    list_missing_severity: int = 4  # a category the school filters is not filtered
    statutory_missing_severity: int = 4  # everything blocked: the school has no web access
    filter_failed_severity: int = 4  # a laptop's own filter failed
    sniffer_unavailable_severity: int = 2  # bypass seen from connections only, not packets
    netlink_unavailable_severity: int = 2  # network changes noticed by the 60 s re-check only
    other_problem_severity: int = 2  # a problem kind this hub does not know yet
    spool_dropped_severity: int = 3  # routine summaries lost: a gap in the record


@dataclass(frozen=True, slots=True)
class ConcernRule:
    """concern: a pupil or teacher reported something upsetting seen on a laptop."""

    enabled: bool = True  # turning it off is not recommended (docs/alerts.md)
    severity: int = 4


@dataclass(frozen=True, slots=True)
class SelftestRule:
    """selftest: a DNS filter's self-test found a blocked category answering (every run goes
    to the checks register whatever this says)."""

    enabled: bool = True
    severity: int = 3


DEFAULT_SECURITY_REASONS = (
    Reason.BAD_SIGNATURE.value,
    Reason.DECRYPT_FAILED.value,
    Reason.REPLAY.value,
    Reason.UNKNOWN_DEVICE.value,
    Reason.REVOKED.value,
)


@dataclass(frozen=True, slots=True)
class SecurityRule:
    """security: bursts of forged, replayed or unknown-device envelopes."""

    enabled: bool = True
    severity: int = 3
    reasons: tuple[str, ...] = DEFAULT_SECURITY_REASONS
    attempts: int = 5
    minutes: int = 10


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """Everything [rules] says; RulesConfig() is the documented defaults."""

    timezone: str = "Europe/London"
    cooldown_minutes: int = 60
    evidence_limit: int = 50
    offsite: OffsiteRule = OffsiteRule()
    blocked: BlockedRule = BlockedRule()
    bypass: BypassRule = BypassRule()
    tamper: TamperRule = TamperRule()
    silent: SilentRule = SilentRule()
    security: SecurityRule = SecurityRule()
    health: HealthRule = HealthRule()
    concern: ConcernRule = ConcernRule()
    selftest: SelftestRule = SelftestRule()

    @property
    def zone(self) -> ZoneInfo:
        """The school's time zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)

    @property
    def policy(self) -> AlertPolicy:
        """Cooldown and evidence cap for the alert store."""
        return AlertPolicy(self.cooldown_minutes * 60_000, self.evidence_limit)


def _zone(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return 'must be an IANA time zone such as "Europe/London"'
    return None


def _severity(section: Section, key: str, default: int) -> int:
    return int(section.integer(key, default, lo=0, hi=5))


def _hours(section: Section, key: str, default: Hours | None) -> Hours | None:
    text = section.optional_text(key)
    if text is None:
        return default
    parsed = parse_hours(text)
    if isinstance(parsed, str):
        section.fail(key, text, parsed)
    return parsed


def _sub(parent: Section, key: str) -> Section:
    return Section(f"{parent.name}.{key}", parent.table(key, {}), parent.source)


def _offsite(s: Section) -> OffsiteRule:
    d = OffsiteRule()
    rule = OffsiteRule(
        enabled=s.flag("enabled", True),
        pupil_severity=_severity(s, "pupil_severity", d.pupil_severity),
        pupil_night_severity=_severity(s, "pupil_night_severity", d.pupil_night_severity),
        night=_hours(s, "night", d.night) or d.night,
        staff_severity=_severity(s, "staff_severity", d.staff_severity),
        staff_hours=_hours(s, "staff_hours", None),
        staff_out_of_hours_severity=_severity(
            s, "staff_out_of_hours_severity", d.staff_out_of_hours_severity
        ),
    )
    s.done()
    return rule


def _category_name(section: Section, key: str, name: str) -> str:
    """A category name as written (checked), resolved to the vocabulary's name."""
    if not _CATEGORY.fullmatch(name):
        section.fail(key, name, "category names are 1-63 of [a-z0-9_-]")
    if canonical(name) in NOT_BLOCKS:
        section.fail(
            key,
            name,
            "is the filter's name for answers that are not blocks (docs/categories.md); "
            "it never counts as a blocked attempt",
        )
    return canonical(name)


def _threshold_default(d: BlockedRule, severity: int) -> tuple[int, int]:
    return (d.urgent_attempts, d.urgent_minutes) if severity >= URGENT else (d.attempts, d.minutes)


def _blocked(s: Section, bypass: tuple[str, ...]) -> BlockedRule:
    d = BlockedRule()
    severities = dict(d.severities)  # named categories are merged over the defaults
    thresholds: dict[str, tuple[int, int]] = {}
    cats = _sub(s, "categories")
    written: dict[str, str] = {}  # vocabulary name -> the name written, to refuse an alias twice
    for key, value in sorted(s.table("categories", {}).items()):
        name = _category_name(cats, key, key)
        if name in written:
            cats.fail(
                key, value, f"{key} and {written[name]} are one category ({name}): set it once"
            )
        written[name] = key
        if name in bypass:
            cats.fail(key, value, "is a bypass category: set its severity in [rules.bypass]")
        if not isinstance(value, dict):
            if isinstance(value, bool) or not isinstance(value, int):
                cats.fail(key, value, "must be a severity 0..5 or {severity, attempts, minutes}")
            severities[name] = _severity(cats, key, 0)
            continue
        one = Section(f"{cats.name}.{key}", cats.table(key), s.source)
        severities[name] = _severity(one, "severity", severities.get(name, d.other_severity))
        if one.has("attempts") or one.has("minutes"):
            attempts, minutes = _threshold_default(d, severities[name])
            thresholds[name] = (
                int(one.integer("attempts", attempts, lo=1, hi=10_000)),
                int(one.integer("minutes", minutes, lo=1, hi=7 * 24 * 60)),
            )
        one.done()
    cats.done()
    for name in bypass:  # a bypass category is the bypass rule's, even where named by default
        severities.pop(name, None)
    rule = BlockedRule(
        enabled=s.flag("enabled", True),
        severities=MappingProxyType(severities),
        thresholds=MappingProxyType(thresholds),
        other_severity=_severity(s, "other_severity", d.other_severity),
        urgent_attempts=int(s.integer("urgent_attempts", d.urgent_attempts, lo=1, hi=10_000)),
        urgent_minutes=int(s.integer("urgent_minutes", d.urgent_minutes, lo=1, hi=7 * 24 * 60)),
        attempts=int(s.integer("attempts", d.attempts, lo=1, hi=10_000)),
        minutes=int(s.integer("minutes", d.minutes, lo=1, hi=7 * 24 * 60)),
    )
    s.done()
    return rule


def _bypass(s: Section) -> BypassRule:
    d = BypassRule()
    written = s.text_list("categories", list(d.categories))
    categories = tuple(dict.fromkeys(_category_name(s, "categories", n) for n in written))
    rule = BypassRule(
        enabled=s.flag("enabled", True),
        severity=_severity(s, "severity", d.severity),
        categories=categories,
    )
    s.done()
    return rule


def _tamper(s: Section) -> TamperRule:
    d = TamperRule()
    rule = TamperRule(
        enabled=s.flag("enabled", True),
        last_will_severity=_severity(s, "last_will_severity", d.last_will_severity),
        last_will_grace_minutes=int(
            s.integer("last_will_grace_minutes", d.last_will_grace_minutes, lo=1, hi=24 * 60)
        ),
        filter_disabled_severity=_severity(
            s, "filter_disabled_severity", d.filter_disabled_severity
        ),
        resolver_changed_severity=_severity(
            s, "resolver_changed_severity", d.resolver_changed_severity
        ),
        clock_skew_severity=_severity(s, "clock_skew_severity", d.clock_skew_severity),
        clock_skew_minutes=int(s.integer("clock_skew_minutes", d.clock_skew_minutes, lo=1)),
        policy_stale_severity=_severity(s, "policy_stale_severity", d.policy_stale_severity),
        policy_stale_hours=int(s.integer("policy_stale_hours", d.policy_stale_hours, lo=1)),
    )
    s.done()
    return rule


def _silent(s: Section) -> SilentRule:
    d = SilentRule()
    rule = SilentRule(
        enabled=s.flag("enabled", True),
        laptop_days=int(s.integer("laptop_days", d.laptop_days, lo=1, hi=365)),
        laptop_severity=_severity(s, "laptop_severity", d.laptop_severity),
        sinkhole_minutes=int(
            s.integer("sinkhole_minutes", d.sinkhole_minutes, lo=2, hi=7 * 24 * 60)
        ),
        sinkhole_severity=_severity(s, "sinkhole_severity", d.sinkhole_severity),
    )
    s.done()
    return rule


def _health(s: Section) -> HealthRule:
    d = HealthRule()
    rule = HealthRule(
        enabled=s.flag("enabled", True),
        list_missing_severity=_severity(s, "list_missing_severity", d.list_missing_severity),
        statutory_missing_severity=_severity(
            s, "statutory_missing_severity", d.statutory_missing_severity
        ),
        filter_failed_severity=_severity(s, "filter_failed_severity", d.filter_failed_severity),
        sniffer_unavailable_severity=_severity(
            s, "sniffer_unavailable_severity", d.sniffer_unavailable_severity
        ),
        netlink_unavailable_severity=_severity(
            s, "netlink_unavailable_severity", d.netlink_unavailable_severity
        ),
        other_problem_severity=_severity(s, "other_problem_severity", d.other_problem_severity),
        spool_dropped_severity=_severity(s, "spool_dropped_severity", d.spool_dropped_severity),
    )
    s.done()
    return rule


def _concern(s: Section) -> ConcernRule:
    d = ConcernRule()
    rule = ConcernRule(
        enabled=s.flag("enabled", d.enabled),
        # 1-5, not 0: a concern is always an alert while the rule is on.
        severity=int(s.integer("severity", d.severity, lo=1, hi=5)),
    )
    s.done()
    return rule


def _selftest(s: Section) -> SelftestRule:
    d = SelftestRule()
    rule = SelftestRule(
        enabled=s.flag("enabled", d.enabled),
        severity=int(s.integer("severity", d.severity, lo=1, hi=5)),
    )
    s.done()
    return rule


def _security(s: Section) -> SecurityRule:
    d = SecurityRule()
    known = [r.value for r in Reason]
    reasons = tuple(s.text_list("reasons", list(d.reasons)))
    for reason in reasons:
        if reason not in known:
            s.fail("reasons", reason, f"each reason must be one of {', '.join(known)}")
    rule = SecurityRule(
        enabled=s.flag("enabled", True),
        severity=_severity(s, "severity", d.severity),
        reasons=reasons,
        attempts=int(s.integer("attempts", d.attempts, lo=1, hi=100_000)),
        minutes=int(s.integer("minutes", d.minutes, lo=1, hi=24 * 60)),
    )
    s.done()
    return rule


def parse_rules(raw: object, source: str = "") -> RulesConfig:
    """Validate a raw [rules] table. Raises ConfigError naming section, key, value and rule."""
    root = Section("rules", raw, source)
    bypass = _bypass(_sub(root, "bypass"))
    config = RulesConfig(
        timezone=root.text("timezone", "Europe/London", check=_zone),
        cooldown_minutes=int(root.integer("cooldown_minutes", 60, lo=0, hi=30 * 24 * 60)),
        evidence_limit=int(root.integer("evidence_limit", 50, lo=1, hi=1000)),
        offsite=_offsite(_sub(root, "offsite_use")),
        blocked=_blocked(_sub(root, "blocked_content"), bypass.categories),
        bypass=bypass,
        tamper=_tamper(_sub(root, "tamper")),
        silent=_silent(_sub(root, "silent_device")),
        security=_security(_sub(root, "security")),
        health=_health(_sub(root, "health")),
        concern=_concern(_sub(root, "concern")),
        selftest=_selftest(_sub(root, "selftest")),
    )
    root.done()
    return config


def load_rules(config: HubConfig) -> RulesConfig:
    """The rules of a loaded hub.toml: defaults when [rules] is absent; raises ConfigError."""
    raw = config.extra.get("rules")
    if raw is None:
        return RulesConfig()
    return parse_rules(raw, str(config.path))


def covering_rule(rules: RulesConfig, category: str) -> str | None:
    """The rule that turns blocked lookups in a category (or an alias) into alerts under these
    rules: "bypass", "blocked_content" (perhaps at severity 0: someone decided), or None."""
    name = canonical(category)
    if name in rules.bypass.categories:
        return BYPASS
    if name in rules.blocked.severities or rules.blocked.other_severity > 0:
        return BLOCKED_CONTENT
    return None


def coverage_warnings(rules: RulesConfig, named: Mapping[str, str]) -> list[str]:
    """A warning for each category that no rule covers: the shared vocabulary's (which a custom
    [rules.bypass] categories can leave out), then those `named` (category -> where it is
    named, e.g. "[policy.groups.pupils] block"). Each says what to do."""
    wanted: dict[str, str] = {}
    for category in defaults(BLOCKED_CONTENT) + defaults(BYPASS):
        wanted[category.name] = f"shared category: {category.meaning}"
    for name, where in named.items():
        if canonical(name) not in NOT_BLOCKS:
            wanted.setdefault(canonical(name), where)
    warnings = []
    for name, where in wanted.items():
        if covering_rule(rules, name) is not None:
            continue
        shared = lookup(name)
        if shared is not None and shared.rule == BYPASS:
            fix = f'add "{name}" back to [rules.bypass] categories'
        else:
            fix = (
                f"give it a severity in [rules.blocked_content.categories] (e.g. {name} = 3), "
                f"add it to [rules.bypass] categories if it is a way round the filter, or name "
                f"the list with a shared category (docs/categories.md: {shared_names()})"
            )
        warnings.append(
            f'category "{name}" ({where}): no rule covers it, so its blocked lookups raise no '
            f"alert; {fix}"
        )
    return warnings
