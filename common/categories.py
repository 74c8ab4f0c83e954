"""The category vocabulary the filter and the hub share: each category's name, what it holds,
its default severity at the hub and the hub rule that turns its blocked lookups into alerts.

A category is what a filter list is named (`[[lists]] category` in hedgerow-dns.toml, a group's
`block` in a signed policy) and what reports carry (`categories`, `blocked[].category`, an
event's `category`). A name outside this vocabulary reaches the hub and raises nothing unless
hub.toml gives it a rule, so `hedgerow-dns check` and `hedgerow-hub check` warn about one.
docs/categories.md is the same table for people; a test holds the two together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

BLOCKED_CONTENT = "blocked_content"  # the hub rule for blocked lookups by category
BYPASS = "bypass"  # the hub rule for attempts to get round the filter
ANTI_BYPASS = "bypass"  # the category of the filter's own anti-bypass answers
# The severity the bypass rule gives by default ([rules.bypass] severity).
BYPASS_SEVERITY = 4


@dataclass(frozen=True, slots=True)
class Category:
    """One shared category. `rule` is the hub rule that covers its blocked lookups, or None for
    the filter's own names for answers that are not blocks (SafeSearch, ECH): those are counted
    in a summary's `categories` but are never a blocked attempt."""

    name: str
    meaning: str  # what the category holds, for a person choosing a list's name
    severity: int  # the hub's default severity, 0 (logged, no alert) to 5
    rule: str | None
    label: str = ""  # how an alert sentence names it; "" means the name with spaces
    aliases: tuple[str, ...] = ()  # other names the hub reads as this one

    @property
    def said(self) -> str:
        """The words for it in an alert sentence, e.g. "self-harm", "DNS-over-HTTPS"."""
        return self.label or self.name.replace("_", " ")


VOCABULARY: tuple[Category, ...] = (
    # blocked_content: the DfE filtering standards' illegal and inappropriate content (the UK
    # Safer Internet Centre's "appropriate filtering" categories), gravest first.
    Category(
        "iwf",
        "child sexual abuse content on the Internet Watch Foundation's list (statutory)",
        5,
        BLOCKED_CONTENT,
        "IWF-listed (child abuse)",
        ("csam", "child_abuse"),
    ),
    Category(
        "terrorism",
        "unlawful terrorist content on the police-assessed list (PALUTC, statutory)",
        5,
        BLOCKED_CONTENT,
        "terrorist content",
        ("palutc", "terrorist"),
    ),
    Category(
        "self_harm",
        "content that promotes or shows self-harm, suicide or eating disorders",
        5,
        BLOCKED_CONTENT,
        "self-harm",
        ("self-harm", "selfharm", "suicide"),
    ),
    Category(
        "extremism",
        "extremist and radicalising content (the Prevent duty)",
        5,
        BLOCKED_CONTENT,
        aliases=("radicalisation",),
    ),
    Category(
        "adult",
        "pornography and other sexually explicit content",
        4,
        BLOCKED_CONTENT,
        aliases=("porn", "pornography"),
    ),
    Category(
        "violence",
        "content that promotes or glorifies violence, including weapons",
        3,
        BLOCKED_CONTENT,
        aliases=("weapons",),
    ),
    Category(
        "discrimination",
        "content that promotes hatred or unjust treatment of people for who they are",
        3,
        BLOCKED_CONTENT,
        "hate",
        ("hate",),
    ),
    Category(
        "drugs",
        "illegal drugs and substance misuse",
        3,
        BLOCKED_CONTENT,
        aliases=("substance_abuse",),
    ),
    Category(
        "gambling", "betting, casinos and lotteries", 3, BLOCKED_CONTENT, aliases=("betting",)
    ),
    Category(
        "malware",
        "malware, hacking tools and sites that compromise devices",
        2,
        BLOCKED_CONTENT,
        aliases=("hacking",),
    ),
    Category(
        "phishing",
        "phishing and scams after passwords or money",
        2,
        BLOCKED_CONTENT,
        aliases=("scam",),
    ),
    Category("piracy", "piracy and copyright theft", 1, BLOCKED_CONTENT),
    Category(
        "social_networks",
        "social networks and chat (in the record, no alert by default)",
        0,
        BLOCKED_CONTENT,
        "social network",
        ("social", "social_media"),
    ),
    # bypass: ways round the filter, all at the bypass rule's one severity.
    Category(
        ANTI_BYPASS,
        "the filter's own anti-bypass answers (use-application-dns.net, mask.icloud.com, "
        "resolver.arpa), or a list of bypass services",
        BYPASS_SEVERITY,
        BYPASS,
        "encrypted DNS or a private relay",
    ),
    Category("doh", "DNS-over-HTTPS resolvers", BYPASS_SEVERITY, BYPASS, "DNS-over-HTTPS"),
    Category("dot", "DNS-over-TLS resolvers", BYPASS_SEVERITY, BYPASS, "DNS-over-TLS"),
    Category("vpn", "VPN services", BYPASS_SEVERITY, BYPASS, "VPN", ("vpns",)),
    Category("proxy", "web proxies and anonymisers", BYPASS_SEVERITY, BYPASS, aliases=("proxies",)),
    Category("tor", "Tor entry points and bridges", BYPASS_SEVERITY, BYPASS, "Tor"),
    # Answers, not blocks: the filter names them so, and a summary counts them.
    Category("safesearch", "search engines sent to their SafeSearch address (allowed)", 0, None),
    Category("youtube", "YouTube sent to its restricted address (allowed)", 0, None),
    Category("ech", "HTTPS/SVCB records withheld so ECH cannot hide a site (allowed)", 0, None),
)

BY_NAME: Mapping[str, Category] = MappingProxyType({c.name: c for c in VOCABULARY})
ALIASES: Mapping[str, str] = MappingProxyType(
    {alias: c.name for c in VOCABULARY for alias in c.aliases}
)
# The filter's names for answers that are not blocks: never a blocked attempt.
NOT_BLOCKS: frozenset[str] = frozenset(c.name for c in VOCABULARY if c.rule is None)


def canonical(name: str) -> str:
    """The vocabulary's name for a category: an alias resolved, any other name unchanged."""
    return ALIASES.get(name, name)


def lookup(name: str) -> Category | None:
    """The shared category of this name or alias, or None if the vocabulary has none."""
    return BY_NAME.get(canonical(name))


def defaults(rule: str) -> tuple[Category, ...]:
    """The categories a hub rule covers by default, in vocabulary order."""
    return tuple(c for c in VOCABULARY if c.rule == rule)


def shared_names(rule: str | None = None) -> str:
    """E.g. "iwf, terrorism, self_harm, ...": the names to suggest in a warning."""
    return ", ".join(c.name for c in VOCABULARY if c.rule is not None and rule in (None, c.rule))
