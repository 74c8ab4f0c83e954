"""`hedgerow-hub check`: every section serve reads is validated, and every problem is named
(section, key, value and rule), so the command is fit for systemd's ExecStartPre=."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.config import load_config
from hub.daemon import HubService
from hub.datadir import init_data_dir
from hub.ingest.settings import WORKERS_RULE, auto_workers, load_ingest_settings

SITE = "cape-primary"

BROKEN: list[tuple[str, str, str]] = [
    # (name, text appended to a valid hub.toml, what the message must name)
    ("rules", "[rules]\ncooldown_minutes = -1\n", "[rules] cooldown_minutes = -1"),
    ("rules table", "[rules.tamper]\nlast_will_grace = 5\n", "[rules.tamper] last_will_grace"),
    (
        "rules category",
        "[rules.blocked_content.categories]\ngambling = 9\n",
        "gambling",
    ),
    ("notify", '[notify]\nfrom = "nobody"\n', "[notify] from = \"nobody\""),
    (
        "contacts",
        '[contacts.dsl]\nwebhook = "http://example.com/hook"\n',
        "[contacts.dsl] webhook = \"http://example.com/hook\"",
    ),
    ("policy", "[policy]\nsummary_interval_s = 5\n", "[policy] summary_interval_s = 5"),
    ("retention", "[retention]\nsummaries_days = 0\n", "[retention] summaries_days = 0"),
    ("metrics", '[metrics]\nlisten = "nowhere"\n', "[metrics] listen = \"nowhere\""),
    ("enroll", "[enroll]\nrate_per_minute = 0\n", "[enroll] rate_per_minute = 0"),
    (
        "broker_reload shell string",
        '[enroll]\nbroker_reload = "systemctl reload mosquitto"\n',
        "[enroll] broker_reload = \"systemctl reload mosquitto\": must be an argv list such as "
        '["systemctl", "reload", "mosquitto"], never a shell string',
    ),
    (
        "broker_reload one item",
        '[enroll]\nbroker_reload = ["systemctl reload mosquitto"]\n',
        "[enroll] broker_reload = [\"systemctl reload mosquitto\"]: is run without a shell",
    ),
    ("broker_reload empty", "[enroll]\nbroker_reload = []\n", "[enroll] broker_reload = []"),
    (
        "broker_reload not strings",
        '[enroll]\nbroker_reload = ["kill", 1]\n',
        "[enroll] broker_reload = [\"kill\", 1]: must be an argv list",
    ),
    (
        "broker_reload relative",
        '[enroll]\nbroker_reload = ["bin/reload"]\n',
        "[enroll] broker_reload = [\"bin/reload\"]: the program must be a name found on PATH or an "
        "absolute path",
    ),
    (
        "broker_reload missing",
        '[enroll]\nbroker_reload = ["/nonexistent/hedgerow-reload"]\n',
        "program '/nonexistent/hedgerow-reload' is not found or not executable",
    ),
    (
        "broker_reload timeout",
        "[enroll]\nbroker_reload_timeout_s = 0\n",
        "[enroll] broker_reload_timeout_s = 0: must be at least 1",
    ),
    (
        "ingest workers word",
        '[ingest]\nworkers = "many"\n',
        "[ingest] workers = \"many\": " + WORKERS_RULE,
    ),
    ("ingest workers negative", "[ingest]\nworkers = -1\n", "[ingest] workers = -1: must be"),
    ("ingest workers too many", "[ingest]\nworkers = 65\n", "[ingest] workers = 65: must be"),
    ("ingest workers boolean", "[ingest]\nworkers = true\n", "[ingest] workers = true: must be"),
    ("ingest unknown key", "[ingest]\nthreads = 2\n", "[ingest] threads = 2: is not a known key"),
]


def make_config(tmp_path: Path, extra: str = "") -> Path:
    config = init_data_dir(tmp_path / "hub", SITE)
    with open(config, "a", encoding="utf-8") as handle:
        handle.write("\n" + extra)
    return config


def test_a_valid_configuration_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path)
    assert main(["check", "--config", str(config)]) == 0
    assert "ok" in capsys.readouterr().out


def test_a_broker_reload_command_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = '[enroll]\nbroker_reload = ["kill", "-HUP", "1"]\nbroker_reload_timeout_s = 5\n'
    config = make_config(tmp_path, text)
    assert main(["check", "--config", str(config)]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "workers"),
    [("", auto_workers()), ('[ingest]\nworkers = "auto"\n', auto_workers()),
     ("[ingest]\nworkers = 0\n", 0), ("[ingest]\nworkers = 3\n", 3)],
)  # fmt: skip
def test_ingest_workers(tmp_path: Path, text: str, workers: int) -> None:
    config = make_config(tmp_path, text)
    assert main(["check", "--config", str(config)]) == 0
    assert load_ingest_settings(load_config(config)).workers == workers
    assert HubService(load_config(config)).opening_processes == workers  # what serve starts


def test_the_throttle_is_configurable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "[ingest]\nthrottle_refusals = 500\nthrottle_window_s = 30\nthrottle_seconds = 600\n"
    config = make_config(tmp_path, text)
    assert main(["check", "--config", str(config)]) == 0
    bursts = load_ingest_settings(load_config(config)).bursts
    assert (bursts.rejections, bursts.window_s, bursts.cool_s) == (500, 30, 600)
    bad = make_config(tmp_path / "bad", "[ingest]\nthrottle_refusals = 1\n")
    assert main(["check", "--config", str(bad)]) != 0
    assert "[ingest] throttle_refusals = 1" in capsys.readouterr().err


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_auto_workers_leave_a_core_to_the_ingest_thread(cores: int, workers: int) -> None:
    assert auto_workers(cores) == workers


@pytest.mark.parametrize(("name", "text", "needle"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_section_fails_naming_section_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, needle: str
) -> None:
    config = make_config(tmp_path, text)
    assert main(["check", "--config", str(config)]) == 1
    assert needle in capsys.readouterr().err


def test_a_broken_site_policy_file_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    policy = config.parent / "policy"
    policy.mkdir()
    (policy / f"{SITE}.toml").write_text('[policy]\ndefault_group = "nobody"\n')
    assert main(["check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{SITE}.toml" in err
    assert "[policy] default_group = \"nobody\"" in err


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, BROKEN[0][1] + BROKEN[5][1] + BROKEN[6][1])
    assert main(["check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    for _, _, needle in (BROKEN[0], BROKEN[5], BROKEN[6]):
        assert needle in err
    assert "3 problem(s)" in err
