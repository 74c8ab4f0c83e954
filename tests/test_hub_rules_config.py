"""[rules] validation (clear messages naming section, key, value and rule), the documented
example, and all-or-nothing reload."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from hub.config import load_config
from hub.datadir import init_data_dir
from hub.rules import RuleEngine, RulesConfig, load_rules, parse_rules
from hub.rules.hours import Hours, parse_hours
from hub.rules.settings import CategoryRule

BAD_RULES: list[tuple[dict[str, Any], str]] = [
    ({"timezone": "Mars/Olympus"}, "[rules] timezone = \"Mars/Olympus\": must be an IANA time zone"),
    ({"timezone": 5}, "[rules] timezone = 5: must be a string"),
    ({"cooldown_minutes": -1}, "[rules] cooldown_minutes = -1: must be at least 0"),
    ({"colldown_minutes": 5}, "[rules] colldown_minutes = 5: is not a known key"),
    ({"offsite_use": 3}, "[rules] offsite_use = 3: must be a table"),
    (
        {"offsite_use": {"pupil_severity": 7}},
        "[rules.offsite_use] pupil_severity = 7: must be at most 5",
    ),
    (
        {"offsite_use": {"pupil_severity": True}},
        "[rules.offsite_use] pupil_severity = true: must be an integer",
    ),
    (
        {"offsite_use": {"night": "22-6"}},
        "[rules.offsite_use] night = \"22-6\": must be \"HH:MM-HH:MM\"",
    ),
    (
        {"offsite_use": {"staff_hours": "08:00-08:00"}},
        "[rules.offsite_use] staff_hours = \"08:00-08:00\": start and end must differ",
    ),
    (
        {"blocked_content": {"categories": {"gambling": "high"}}},
        "[rules.blocked_content.categories] gambling = \"high\": must be a severity 0..5",
    ),
    (
        {"blocked_content": {"categories": {"gambling": 9}}},
        "[rules.blocked_content.categories] gambling = 9: must be at most 5",
    ),
    (
        {"blocked_content": {"categories": {"Bad Name": 3}}},
        "[rules.blocked_content.categories] Bad Name = \"Bad Name\": category names are",
    ),
    (
        {"blocked_content": {"categories": {"doh": 3}}},
        "[rules.blocked_content.categories] doh = 3: is a bypass category",
    ),
    (
        {"blocked_content": {"categories": {"gambling": {"severity": 3, "atempts": 2}}}},
        "[rules.blocked_content.categories.gambling] atempts = 2: is not a known key",
    ),
    (
        {"blocked_content": {"categories": {"gambling": {"attempts": 0}}}},
        "[rules.blocked_content.categories.gambling] attempts = 0: must be at least 1",
    ),
    (
        {"blocked_content": {"minutes": 0}},
        "[rules.blocked_content] minutes = 0: must be at least 1",
    ),
    (
        {"bypass": {"categories": "doh"}},
        "[rules.bypass] categories = \"doh\": must be a list of strings",
    ),
    ({"tamper": {"enabled": "yes"}}, "[rules.tamper] enabled = \"yes\": must be true or false"),
    (
        {"tamper": {"clock_skew_minutes": 0}},
        "[rules.tamper] clock_skew_minutes = 0: must be at least 1",
    ),
    (
        {"silent_device": {"laptop_days": 0}},
        "[rules.silent_device] laptop_days = 0: must be at least 1",
    ),
    (
        {"security": {"reasons": ["forged"]}},
        "[rules.security] reasons = \"forged\": each reason must be one of",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD_RULES, ids=[m.split(":")[0] for _, m in BAD_RULES])
def test_bad_rules_are_refused_clearly(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(raw, "/etc/hedgerow/hub.toml")
    assert str(caught.value).startswith("/etc/hedgerow/hub.toml: " + message)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:00-06:00", Hours(1320, 360)),
        ("07:30-19:00", Hours(450, 1140)),
        ("00:00-23:59", Hours(0, 1439)),
        ("24:00-06:00", None),
        ("7:00-19:00", None),
        ("07:00 - 19:00", None),
        ("07:00-07:00", None),
    ],
)
def test_parse_hours(text: str, expected: Hours | None) -> None:
    parsed = parse_hours(text)
    assert parsed == expected if expected is not None else isinstance(parsed, str)


@pytest.mark.parametrize(
    ("hours", "minute", "inside"),
    [
        (Hours(1320, 360), 1320, True),
        (Hours(1320, 360), 0, True),
        (Hours(1320, 360), 359, True),
        (Hours(1320, 360), 360, False),
        (Hours(1320, 360), 720, False),
        (Hours(420, 1140), 420, True),
        (Hours(420, 1140), 1140, False),
        (Hours(420, 1140), 60, False),
    ],
)
def test_hours_contain(hours: Hours, minute: int, inside: bool) -> None:
    assert hours.contains(minute) is inside


def test_defaults() -> None:
    rules = parse_rules({})
    assert rules == RulesConfig()
    blocked = rules.blocked
    assert [
        blocked.category(c)
        for c in ("iwf", "self_harm", "extremism", "adult", "gambling", "social_networks", "games")
    ] == [
        CategoryRule(5, 1, 1),
        CategoryRule(5, 1, 1),
        CategoryRule(5, 1, 1),
        CategoryRule(4, 1, 1),
        CategoryRule(3, 3, 10),
        CategoryRule(0, 3, 10),
        CategoryRule(0, 3, 10),
    ]
    assert rules.policy.cooldown_ms == 60 * 60_000
    assert str(rules.offsite.night) == "22:00-06:00"


def docs_example() -> str:
    text = (Path(__file__).parent.parent / "docs" / "alerts.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks, "docs/alerts.md has no ```toml example"
    return str(blocks[0])


def test_the_documented_example_is_valid() -> None:
    rules = parse_rules(tomllib.loads(docs_example())["rules"])
    assert rules.blocked.category("gambling") == CategoryRule(3, 5, 30)
    assert rules.blocked.category("social_networks").severity == 0
    assert rules.offsite.staff_hours == Hours(7 * 60, 19 * 60)


def write_rules(config: Path, rules: str) -> None:
    """hub.toml as init wrote it, followed by `rules`."""
    base = config.read_text().split("\n# --- rules ---\n")[0]
    config.write_text(base + "\n# --- rules ---\n" + rules)


def test_load_rules_from_hub_toml_and_reload_all_or_nothing(tmp_path: Path) -> None:
    config = init_data_dir(tmp_path / "data", "cape-primary")
    assert load_rules(load_config(config)) == RulesConfig()  # no [rules]: the defaults
    write_rules(
        config, "[rules]\ncooldown_minutes = 5\n[rules.blocked_content.categories]\ngambling = 4\n"
    )
    engine = RuleEngine(load_rules(load_config(config)))
    assert engine.rules.cooldown_minutes == 5

    write_rules(config, "[rules]\ncooldown_minutes = 15\n[rules.offsite_use]\npupil_severity = 9\n")
    before = engine.rules
    with pytest.raises(ConfigError, match=r"\[rules.offsite_use\] pupil_severity = 9"):
        engine.reload(config)
    assert engine.rules is before  # the old rules stay in force, untouched

    write_rules(config, "[rules\ncooldown_minutes = 15\n")  # not even TOML
    with pytest.raises(ConfigError, match="not valid TOML"):
        engine.reload(config)
    assert engine.rules is before

    write_rules(config, "[rules]\ncooldown_minutes = 15\n")
    engine.reload(config)
    assert engine.rules.cooldown_minutes == 15
    assert engine.rules.blocked.category("gambling").severity == 3  # back to the default
