"""The category vocabulary the filter and the hub share (common/categories.py): sound in itself,
the source of the hub's defaults, the same table as docs/categories.md, read by both `check`
commands (a category no rule covers is warned about), and the filter's anti-bypass answers in
the category the hub's bypass rule covers."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.dns.cli import main as dns_main
from agent.dns.config.reader import NAME as DNS_CATEGORY
from common.categories import (
    ALIASES,
    ANTI_BYPASS,
    BLOCKED_CONTENT,
    BY_NAME,
    BYPASS,
    BYPASS_SEVERITY,
    NOT_BLOCKS,
    VOCABULARY,
    canonical,
    defaults,
)
from common.errors import ConfigError
from hub.cli import main as hub_main
from hub.datadir import init_data_dir
from hub.rules import RulesConfig, parse_rules
from hub.rules.settings import _CATEGORY as HUB_CATEGORY
from hub.rules.settings import covering_rule
from hub.rules.wording import category_label
from tests.dns_support import write_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "categories.md"


# --- the vocabulary itself ------------------------------------------------------------------


def test_names_and_aliases_are_unique_and_valid_on_both_sides() -> None:
    names = [c.name for c in VOCABULARY]
    aliases = [a for c in VOCABULARY for a in c.aliases]
    assert len(set(names)) == len(names)
    assert len(set(aliases)) == len(aliases)
    assert not set(names) & set(aliases)
    for name in names + aliases:
        assert DNS_CATEGORY.fullmatch(name), name  # a hedgerow-dns list may be called so
        assert HUB_CATEGORY.fullmatch(name), name  # and hub.toml may name it
    for category in VOCABULARY:
        assert 0 <= category.severity <= 5
        assert category.rule in (BLOCKED_CONTENT, BYPASS, None)
        assert category.meaning
        if category.rule == BYPASS:
            assert category.severity == BYPASS_SEVERITY
    assert BY_NAME[ANTI_BYPASS].rule == BYPASS


def test_the_hub_defaults_are_the_vocabulary() -> None:
    rules = RulesConfig()
    assert dict(rules.blocked.severities) == {c.name: c.severity for c in defaults(BLOCKED_CONTENT)}
    assert rules.bypass.categories == tuple(c.name for c in defaults(BYPASS))
    assert rules.bypass.severity == BYPASS_SEVERITY
    for category in VOCABULARY:
        assert covering_rule(rules, category.name) == category.rule, category.name
        for alias in category.aliases:
            assert covering_rule(rules, alias) == category.rule, alias
            assert rules.blocked.category(alias) == rules.blocked.category(category.name)
    assert covering_rule(rules, "games") is None


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("self_harm", "self-harm"),
        ("self-harm", "self-harm"),
        ("social", "social network"),
        ("bypass", "encrypted DNS or a private relay"),
        ("doh", "DNS-over-HTTPS"),
        ("hardcoded_dns", "a hard-coded DNS server"),
        ("board_games", "board games"),
    ],
)
def test_alert_sentences_use_the_vocabulary_words(name: str, label: str) -> None:
    assert category_label(name) == label


def _docs_rows() -> list[list[str]]:
    text = DOCS.read_text()
    table = text[text.index("| category | what it holds") :].split("\n\n")[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def test_docs_categories_md_is_the_same_table() -> None:
    rows = _docs_rows()
    assert [row[0].strip("`") for row in rows] == [c.name for c in VOCABULARY]
    for row, category in zip(rows, VOCABULARY, strict=True):
        name, meaning, severity, rule, aliases = row
        assert meaning == category.meaning, name
        if category.rule is None:
            assert (severity, rule) == ("-", "none: not a block"), name
        else:
            assert (int(severity), rule) == (category.severity, f"`{category.rule}`"), name
        assert re.findall(r"`([^`]+)`", aliases) == list(category.aliases), name


# --- the hub's [rules] ----------------------------------------------------------------------


def test_an_alias_in_hub_toml_sets_its_category() -> None:
    rules = parse_rules({"blocked_content": {"categories": {"porn": 5, "games": 2}}})
    assert rules.blocked.category("adult").severity == 5
    assert rules.blocked.category("games").severity == 2
    bypass = parse_rules({"bypass": {"categories": ["proxies", "vpn"]}}).bypass
    assert bypass.categories == ("proxy", "vpn")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"blocked_content": {"categories": {"social": 1, "social_networks": 2}}},
            "[rules.blocked_content.categories] social_networks = 2: social_networks and social "
            "are one category (social_networks): set it once",
        ),
        (
            {"blocked_content": {"categories": {"youtube": 3}}},
            '[rules.blocked_content.categories] youtube = "youtube": is the filter\'s name for '
            "answers that are not blocks",
        ),
        (
            {"bypass": {"categories": ["doh", "ech"]}},
            '[rules.bypass] categories = "ech": is the filter\'s name for answers',
        ),
        (
            {"blocked_content": {"categories": {"vpns": 3}}},
            "[rules.blocked_content.categories] vpns = 3: is a bypass category",
        ),
    ],
)
def test_category_mistakes_in_hub_toml_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(raw, "hub.toml")
    assert str(caught.value).startswith("hub.toml: " + message)


def test_every_not_a_block_name_is_refused() -> None:
    for name in sorted(NOT_BLOCKS):
        with pytest.raises(ConfigError, match="not blocks"):
            parse_rules({"blocked_content": {"categories": {name: 1}}})
    assert canonical("social") == "social_networks" and ALIASES["porn"] == "adult"


# --- hedgerow-hub check ---------------------------------------------------------------------


def hub_check(tmp_path: Path, extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = init_data_dir(tmp_path / "hub", "cape-primary")
    config.write_text(config.read_text() + "\n" + extra)
    code = hub_main(["check", "--config", str(config)])
    return code, capsys.readouterr().err


def test_hub_check_is_quiet_about_the_default_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = hub_check(tmp_path, "", capsys)
    assert code == 0
    assert "category" not in err  # the default policy blocks shared categories only


def test_hub_check_warns_about_a_policy_category_no_rule_covers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = (
        '[policy]\ndefault_group = "pupils"\n[policy.groups.pupils]\nblock = ["games", "drugs"]\n'
    )
    code, err = hub_check(tmp_path, extra, capsys)
    assert code == 0  # a warning, not a problem
    (line,) = [line for line in err.splitlines() if "category" in line]
    assert line.startswith('hedgerow-hub check: warning: category "games" ([policy.groups.pupils]')
    assert "no rule covers it, so its blocked lookups raise no alert" in line
    assert "[rules.blocked_content.categories] (e.g. games = 3)" in line


def test_hub_check_warns_about_a_site_policy_file_category(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = init_data_dir(tmp_path / "hub", "cape-primary")
    (config.parent / "policy").mkdir()
    (config.parent / "policy" / "cape-primary.toml").write_text(
        '[policy]\ndefault_group = "pupils"\n[policy.groups.pupils]\nblock = ["weapons", "games"]\n'
    )
    assert hub_main(["check", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert 'category "games"' in err and "cape-primary.toml" in err
    assert "weapons" not in err  # an alias of violence


def test_hub_check_is_quiet_once_a_rule_covers_the_category(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = (
        '[policy]\ndefault_group = "pupils"\n[policy.groups.pupils]\nblock = ["games"]\n'
        "[rules.blocked_content.categories]\ngames = 0\n"
    )
    code, err = hub_check(tmp_path, extra, capsys)
    assert code == 0 and "category" not in err


def test_hub_check_warns_about_shared_bypass_categories_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = hub_check(tmp_path, '[rules.bypass]\ncategories = ["doh", "vpn"]\n', capsys)
    assert code == 0
    warned = re.findall(r'warning: category "([a-z_]+)"', err)
    assert warned == ["bypass", "dot", "proxy", "tor"]
    assert 'add "bypass" back to [rules.bypass] categories' in err


# --- hedgerow-dns check ---------------------------------------------------------------------


def dns(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = dns_main(list(args))
    return code, out.getvalue(), err.getvalue()


def lists(directory: Path, *names: str) -> str:
    """[[lists]] entries called `names`, each with a one-name list file."""
    text = ""
    for name in names:
        source = directory / f"{name}.txt"
        source.write_text(f"{name}.example\n")
        text += f'\n[[lists]]\ncategory = "{name}"\nsource = "{source}"\n'
    return text


def test_dns_check_says_what_the_hub_does_with_each_category(tmp_path: Path) -> None:
    """The network manager's bypass, drugs and social are covered at the hub; games is not, and
    youtube is the filter's own name for restricted-mode answers: both are warned about."""
    extra = lists(tmp_path, "bypass", "drugs", "social", "games", "youtube")
    config = write_config(tmp_path, ["127.0.0.1:5353"], 5399, extra=extra)
    code, out, err = dns("check", "--config", str(config))
    assert code == 0, err
    assert "category bypass: hub rule bypass, severity 4 by default" in out
    assert "category drugs: hub rule blocked_content, severity 3 by default" in out
    assert (
        "category social (social_networks): hub rule blocked_content, severity 0 by default "
        "(recorded, no alert)"
    ) in out
    assert "category gambling: hub rule blocked_content, severity 3 by default" in out
    warnings = [line for line in err.splitlines() if "[[lists]]" in line]
    assert len(warnings) == 2, err
    assert warnings[0].startswith('warning: [[lists]] category = "games": not a shared category')
    assert "its blocked lookups raise no alert at the hub" in warnings[0]
    assert "([rules.blocked_content.categories] games = 3)" in warnings[0]
    assert warnings[1].startswith('warning: [[lists]] category = "youtube": youtube is the filter')
    assert "rename the list" in warnings[1]


def test_dns_check_is_quiet_about_shared_categories(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["127.0.0.1:5353"], 5399)
    code, out, err = dns("check", "--config", str(config))
    assert code == 0 and "[[lists]]" not in err
    # The filter's own anti-bypass answers are named too, though no list provides them.
    assert "category bypass: hub rule bypass, severity 4 by default" in out


def test_the_filters_anti_bypass_answers_are_in_the_shared_bypass_category(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["127.0.0.1:5353"], 5399)
    for name in ("use-application-dns.net", "mask.icloud.com", "_dns.resolver.arpa"):
        code, out, err = dns("explain", "--config", str(config), name, "--json")
        assert code == 0, err
        verdicts = {entry["verdict"]["category"] for entry in json.loads(out)}
        assert verdicts == {ANTI_BYPASS}, (name, out)
        assert covering_rule(RulesConfig(), ANTI_BYPASS) == BYPASS


def test_dns_check_warns_about_an_immediate_category_nothing_carries(tmp_path: Path) -> None:
    report = (
        f'[report]\nhub = "mqtt://127.0.0.1:1883"\nidentity = "{tmp_path / "id"}"\n'
        'immediate = ["adult", "adlt", "bypass"]\n'
    )
    config = write_config(tmp_path, ["127.0.0.1:5353"], 5399, extra=report)
    code, _, err = dns("check", "--config", str(config))
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if "[report] immediate" in line]
    assert line.startswith('warning: [report] immediate = "adlt": no [[lists]] entry provides')
