"""`hedgerow-hub check` reports every problem it can, several within one section included, and
its count says how many it printed (it used to stop at a section's first error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.datadir import init_data_dir

SITE = "cape-primary"


def make_config(tmp_path: Path, extra: str = "", mqtt: str = "") -> Path:
    """A valid hub.toml with `extra` appended and `mqtt` lines added to its [mqtt] section."""
    config = init_data_dir(tmp_path / "hub", SITE)
    text = config.read_text().replace("[mqtt]\n", "[mqtt]\n" + mqtt, 1)
    config.write_text(text + "\n" + extra)
    return config


def check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """Exit status, the problem lines, and the last line of stderr."""
    code = main(["check", "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    problems = [
        line
        for line in err
        if line.startswith("hedgerow-hub check: ") and ": warning: " not in line
    ]
    return code, problems, err[-1]


BROKEN = """
[rules]
cooldown_minutes = -1
evidence_limit = 0
colldown_minutes = 5

[rules.offsite_use]
pupil_severity = 9
night = "22-6"

[rules.blocked_content.categories]
gambling = 9
social = 2
social_networks = 1

[notify]
from = "nobody"
digest_hour_utc = 99

[retention]
summaries_days = 0
"""

# What each problem's line names, in the order check reports them.
NEEDLES = [
    "[mqtt] session_expiry_s = 5: must be at least 86400",
    "[mqtt] qos = 1: is not a known key",
    "[rules] cooldown_minutes = -1: must be at least 0",
    "[rules] evidence_limit = 0: must be at least 1",
    "[rules.offsite_use] pupil_severity = 9: must be at most 5",
    '[rules.offsite_use] night = "22-6": must be "HH:MM-HH:MM"',
    "[rules.blocked_content.categories] gambling = 9: must be at most 5",
    "[rules.blocked_content.categories] social_networks = 1: social_networks and social are one "
    "category (social_networks): set it once",
    "[rules] colldown_minutes = 5: is not a known key",
    '[notify] from = "nobody": must be one address',
    "[notify] digest_hour_utc = 99: must be at most 23",
    "[retention] summaries_days = 0",
]


def test_every_problem_is_reported_with_a_count_that_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, BROKEN, mqtt="session_expiry_s = 5\nqos = 1\n")
    code, problems, last = check(config, capsys)
    assert code == 1
    assert len(problems) == len(NEEDLES), "\n".join(problems)
    for needle, line in zip(NEEDLES, problems, strict=True):
        assert needle in line, (needle, line)
    assert last == f"{config}: {len(NEEDLES)} problem(s)"


def test_two_errors_in_one_section_are_two_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, "[rules]\ncooldown_minutes = -1\nevidence_limit = 0\n")
    code, problems, last = check(config, capsys)
    assert code == 1 and len(problems) == 2, problems
    assert last.endswith(": 2 problem(s)")


def test_every_problem_of_a_site_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, "[rules]\ncooldown_minutes = -1\n")
    policy = config.parent / "policy"
    policy.mkdir()
    (policy / f"{SITE}.toml").write_text(
        '[policy]\ncounts_only_classes = ["robot"]\nsummary_interval_s = 5\ncolour = "red"\n'
    )
    code, problems, last = check(config, capsys)
    assert code == 1
    assert [p.split(": ", 2)[-1].split(" = ")[0] for p in problems] == [
        "[rules] cooldown_minutes",
        "[policy] counts_only_classes",
        "[policy] summary_interval_s",
        "[policy] colour",
    ]
    assert all(f"{SITE}.toml" in p for p in problems[1:])
    assert last.endswith(": 4 problem(s)")


def test_a_problem_that_only_follows_from_another_is_not_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[notify.smtp] without its required host is one problem: check steps past it by dropping
    the table, and does not then report "[notify] smtp is required" as a second one."""
    extra = (
        '[notify]\nfrom = "hub@school.example"\n[notify.smtp]\nport = 25\n'
        '[contacts.dsl]\nemail = "dsl@school.example"\n'
    )
    code, problems, last = check(make_config(tmp_path, extra), capsys)
    assert code == 1
    assert len(problems) == 1 and "[notify.smtp] host = (missing): is required" in problems[0]
    assert last.endswith(": 1 problem(s)")


def test_a_broken_file_is_one_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, "[rules\n")
    code, problems, last = check(config, capsys)
    assert code == 1 and len(problems) == 1 and "not valid TOML" in problems[0]
    assert last.endswith(": 1 problem(s)")


def test_a_valid_configuration_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--config", str(make_config(tmp_path))]) == 0
    assert "ok (site cape-primary" in capsys.readouterr().out
