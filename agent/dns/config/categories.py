"""The list categories of a hedgerow-dns.toml held against the vocabulary the filter and the hub
share (common/categories.py): `hedgerow-dns check` warns about a category that no hub rule
covers by default, since its blocked lookups reach the hub and raise nothing."""

from __future__ import annotations

from collections.abc import Iterable

from common.categories import BLOCKED_CONTENT, NOT_BLOCKS, canonical, lookup, shared_names


def category_lines(categories: Iterable[str]) -> list[str]:
    """For each list category, what the hub does with its blocked lookups by default, e.g.
    "category social (social_networks): hub rule blocked_content, severity 0 by default (recorded,
    no alert)"; nothing for a category the vocabulary lacks (category_warnings names those)."""
    lines = []
    for name in dict.fromkeys(categories):
        shared = lookup(name)
        if shared is None or shared.rule is None:
            continue
        called = name if shared.name == name else f"{name} ({shared.name})"
        quiet = " (recorded, no alert)" if shared.severity == 0 else ""
        lines.append(
            f"category {called}: hub rule {shared.rule}, severity {shared.severity} by default"
            + quiet
        )
    return lines


def category_warnings(categories: Iterable[str]) -> list[str]:
    """One warning per list category that is not a shared one (or an alias of one), or that is
    one of the filter's own names for answers that are not blocks. Each says what to do."""
    warnings = []
    for name in dict.fromkeys(categories):
        where = f'[[lists]] category = "{name}"'
        shared = lookup(name)
        if shared is None:
            warnings.append(
                f"{where}: not a shared category (docs/categories.md), so no hub rule covers "
                "it by default and its blocked lookups raise no alert at the hub; name the "
                f"list with a shared category ({shared_names()}), or give it a rule in hub.toml "
                f"([rules.blocked_content.categories] {name} = 3)"
            )
        elif shared.name in NOT_BLOCKS:
            warnings.append(
                f"{where}: {canonical(name)} is the filter's own name for answers that are not "
                "blocks (docs/categories.md), so the hub never counts this list's blocked "
                f"lookups as attempts; rename the list (e.g. {name}_block) and give that name a "
                f"rule in hub.toml ([rules.{BLOCKED_CONTENT}.categories] {name}_block = 3)"
            )
    return warnings


def immediate_warnings(immediate: Iterable[str], reported: Iterable[str]) -> list[str]:
    """A warning per `[report] immediate` category that no answer will carry (no list provides
    it, and it is not the filter's own anti-bypass category): nothing would go at once."""
    carried = set(reported)
    return [
        f'[report] immediate = "{name}": no [[lists]] entry provides this category (nor is it '
        "the anti-bypass category bypass), so no event is ever sent for it"
        for name in dict.fromkeys(immediate)
        if name not in carried
    ]
