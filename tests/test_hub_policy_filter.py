"""What the laptop agent filters by: [[policy.lists]], the groups' filter settings and
[policy.agent] from hub.toml into each device's signed policy, strictly read, and a realistic
policy kept well inside the signed message limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.policy_client import accept_policy
from common.errors import ConfigError
from common.wire import topics
from common.wire.envelope import MAX_ENVELOPE
from hub.cli import main
from hub.policy.publish import publish_all
from hub.policy.settings import (
    DOCUMENT_BUDGET,
    AgentPolicy,
    GroupPolicy,
    ListPolicy,
    document_size,
    load_policy_settings,
    parse_policy,
)
from tests.enroll_fixtures import SITE, T0, Hub, make_hub

POLICY = """
[policy]
blocked_answer = "nxdomain"

[[policy.lists]]
category = "iwf"
source = "https://lists.example/iwf.txt"
statutory = true
refresh_h = 6

[[policy.lists]]
category = "adult"
source = "https://lists.example/adult.txt"

[[policy.lists]]
category = "gambling"
source = "http://127.0.0.1:8000/gambling.txt"

[policy.groups.pupils]
block = ["iwf", "adult", "gambling"]
allow = ["BBC.co.uk.", "news.example"]

[policy.groups.staff]
block = ["iwf"]
youtube = "moderate"
block_ech = true

[policy.groups.year6]
block = ["iwf", "adult"]
safesearch = true
block_bypass = false

[policy.agent]
beacon_max_rtt_ms = 80
flagged_apps = ["openvpn", "tor", "Psiphon"]
"""


def enrolled(tmp_path: Path, hub: Hub, device: str, group: str, device_class: str) -> Path:
    """A device enrolled from a bundle; its identity directory."""
    out = tmp_path / f"{device}.bundle"
    args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", device]
    assert main([*args, "--class", device_class, "--group", group, "--out", str(out)]) == 0
    from agent.enrolment_client import enroll_from_bundle

    enroll_from_bundle(out, tmp_path / device)
    return tmp_path / device


def device_document(tmp_path: Path, hub: Hub, device: str) -> dict[str, Any]:
    """The device's policy as published and accepted by the device itself."""
    sent: dict[str, bytes] = {}
    db = hub.db()
    try:
        publish_all(db, hub.keys, hub.config, lambda t, p, r: sent.__setitem__(t, p), now_ms=T0)
    finally:
        db.close()
    message = sent[topics.device_policy(SITE, device)]
    assert len(message) < MAX_ENVELOPE
    document = accept_policy(tmp_path / device, message).payload["document"]
    assert isinstance(document, dict)
    return document


def test_device_policy_carries_the_filter_and_agent_settings(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, extra_toml=POLICY)
    enrolled(tmp_path, hub, "lt-1", "pupils", "pupil-laptop")
    enrolled(tmp_path, hub, "st-1", "staff", "staff-laptop")
    enrolled(tmp_path, hub, "lt-6", "year6", "pupil-laptop")
    lists = [
        {
            "category": "iwf",
            "source": "https://lists.example/iwf.txt",
            "statutory": True,
            "refresh_h": 6,
        },
        {
            "category": "adult",
            "source": "https://lists.example/adult.txt",
            "statutory": False,
            "refresh_h": 24,
        },
        {
            "category": "gambling",
            "source": "http://127.0.0.1:8000/gambling.txt",
            "statutory": False,
            "refresh_h": 24,
        },
    ]
    agent = {"beacon_max_rtt_ms": 80, "flagged_apps": ["openvpn", "tor", "Psiphon"]}
    pupil = device_document(tmp_path, hub, "lt-1")
    assert pupil["block"] == ["adult", "gambling", "iwf"]
    assert pupil["filter"] == {
        "lists": lists,
        "blocked_answer": "nxdomain",
        "group": {
            "allow": ["bbc.co.uk", "news.example"],
            "safesearch": True,
            "youtube": "strict",
            "block_encrypted_dns": True,
            "block_bypass": True,
            "block_ech": False,
            "pupils": True,
        },
    }
    assert pupil["agent"] == agent
    staff = device_document(tmp_path, hub, "st-1")
    assert staff["block"] == ["iwf"]
    assert staff["filter"]["group"] == {
        "allow": [],
        "safesearch": False,
        "youtube": "moderate",
        "block_encrypted_dns": True,
        "block_bypass": True,
        "block_ech": True,
        "pupils": False,
    }
    year6 = device_document(tmp_path, hub, "lt-6")["filter"]["group"]
    # safesearch written: YouTube follows it; block_encrypted_dns follows block_bypass.
    assert (year6["safesearch"], year6["youtube"]) == (True, "strict")
    assert (year6["block_bypass"], year6["block_encrypted_dns"], year6["pupils"]) == (
        False,
        False,
        False,
    )


def test_defaults_without_any_new_key(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    enrolled(tmp_path, hub, "lt-1", "pupils", "pupil-laptop")
    enrolled(tmp_path, hub, "st-1", "staff", "staff-laptop")
    pupil = device_document(tmp_path, hub, "lt-1")
    assert pupil["filter"] == {
        "lists": [],
        "blocked_answer": "null",
        "group": {
            "allow": [],
            "safesearch": True,
            "youtube": "strict",
            "block_encrypted_dns": True,
            "block_bypass": True,
            "block_ech": False,
            "pupils": True,
        },
    }
    assert pupil["agent"] == {"beacon_max_rtt_ms": 50}  # flagged_apps omitted: built-in list
    staff = device_document(tmp_path, hub, "st-1")["filter"]["group"]
    assert (staff["safesearch"], staff["youtube"], staff["pupils"]) == (False, "off", False)


def test_a_guests_group_is_filtered_like_pupils() -> None:
    settings = parse_policy({"groups": {"guests": {"block": []}}, "default_group": "guests"}, "")
    assert settings.groups == (
        GroupPolicy("guests", (), safesearch=True, youtube="strict", pupils=True),
    )


def test_a_site_policy_file_carries_its_own_lists(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, extra_toml=POLICY)
    (hub.config.data / "policy").mkdir()
    (hub.config.data / "policy" / f"{SITE}.toml").write_text(
        '[policy]\n[[policy.lists]]\ncategory = "adult"\nsource = "https://other.example/a"\n'
        '[policy.groups.pupils]\nblock = ["adult"]\n'
    )
    settings = load_policy_settings(hub.config, SITE)
    assert settings.lists == (ListPolicy("adult", "https://other.example/a"),)
    assert settings.agent == AgentPolicy()


def test_a_realistic_policy_with_forty_lists_fits(tmp_path: Path) -> None:
    categories = [f"category_{i:02d}" for i in range(40)]
    lists = "".join(
        f'[[policy.lists]]\ncategory = "{c}"\n'
        f'source = "https://filter-lists.trust.example/v2/{c}/domains-and-subdomains.txt"\n'
        for c in categories
    )
    allow = ", ".join(f'"site-{i}.school-partner.example.org"' for i in range(100))
    apps = ", ".join(f'"app-{i}"' for i in range(50))
    quoted = ", ".join(f'"{c}"' for c in categories)
    toml = (
        f"[policy]\n{lists}[policy.groups.pupils]\nblock = [{quoted}]\nallow = [{allow}]\n"
        f"[policy.groups.staff]\nblock = [{quoted}]\n[policy.agent]\nflagged_apps = [{apps}]\n"
    )
    hub = make_hub(tmp_path, extra_toml=toml)
    enrolled(tmp_path, hub, "lt-1", "pupils", "pupil-laptop")
    document = device_document(tmp_path, hub, "lt-1")  # signed, under MAX_ENVELOPE, accepted
    assert len(document["filter"]["lists"]) == 40
    assert len(document["filter"]["group"]["allow"]) == 100
    settings = load_policy_settings(hub.config, SITE)
    size = document_size(settings, settings.groups[0])
    assert 10_000 < size < DOCUMENT_BUDGET // 5  # a fifth of the budget, with ample room


def test_a_policy_too_large_to_sign_is_refused() -> None:
    lists = [
        {"category": f"c{i}", "source": "https://l.example/" + "x" * 900 + str(i)}
        for i in range(200)
    ]
    raw = {"lists": lists, "groups": {"pupils": {"block": ["c1"]}}}
    with pytest.raises(ConfigError, match=r"\[policy\]: a device policy of group pupils would "
                       r"hold \d+ bytes .* at most 196608 fit"):  # fmt: skip
        parse_policy(raw, "hub.toml")


BAD: list[tuple[str, str]] = [
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "http://lists.example/a.txt"\n',
        '[policy.lists category="adult"] source = "http://lists.example/a.txt": must be https:// (http:// is '
        "allowed only to 127.0.0.0/8 or ::1)",
    ),
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "/etc/hedgerow/adult.txt"\n',
        '[policy.lists category="adult"] source = "/etc/hedgerow/adult.txt": must be an https:// URL',
    ),
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "https:///a.txt"\n',
        '[policy.lists category="adult"] source = "https:///a.txt": has no host',
    ),
    (
        '[[policy.lists]]\ncategory = "Adult Sites"\nsource = "https://l.example/a"\n',
        '[policy.lists #1] category = "Adult Sites": must be a lower-case category name',
    ),
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "https://l.example/a"\nrefresh_h = 0\n',
        '[policy.lists category="adult"] refresh_h = 0: must be at least 1',
    ),
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "https://l.example/a"\nweight = 2\n',
        '[policy.lists category="adult"] weight = 2: is not a known key',
    ),
    (
        '[[policy.lists]]\ncategory = "iwf"\nsource = "https://l.example/a"\nstatutory = true\n'
        '[[policy.lists]]\ncategory = "iwf"\nsource = "https://l.example/b"\n',
        '[policy.lists category="iwf"] statutory = false: category "iwf" is statutory in one list and not '
        "in another",
    ),
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "https://l.example/a"\n'
        '[[policy.lists]]\ncategory = "adult"\nsource = "https://l.example/a"\n',
        '[policy.lists category="adult"] source = "https://l.example/a": is listed twice for adult',
    ),
    (
        '[[policy.lists]]\ncategory = "adult"\nsource = "https://l.example/a"\n'
        '[policy.groups.pupils]\nblock = ["adult", "gambling"]\n',
        '[policy.groups.pupils] block = "gambling": no [[policy.lists]] entry provides category '
        '"gambling"',
    ),
    (
        '[policy.groups.pupils]\nblock = ["adult"]\nallow = ["adult"]\n',
        '[policy.groups.pupils] allow = "adult": allow takes domain names',
    ),
    (
        '[policy.groups.pupils]\nallow = ["faß.de"]\n',
        '[policy.groups.pupils] allow = "faß.de": write an international name as its A-labels',
    ),
    (
        '[policy.groups.pupils]\nallow = ["https://bbc.co.uk/"]\n',
        '[policy.groups.pupils] allow = "https://bbc.co.uk/": must be a domain name',
    ),
    (
        '[policy.groups.pupils]\nyoutube = "on"\n',
        '[policy.groups.pupils] youtube = "on": must be one of off, moderate, strict',
    ),
    (
        '[policy.groups.pupils]\nsafesearch = "yes"\n',
        '[policy.groups.pupils] safesearch = "yes": must be true or false',
    ),
    (
        "[policy.groups.pupils]\nblock_doh = true\n",
        "[policy.groups.pupils] block_doh = true: is not a known key",
    ),
    (
        '[policy]\nblocked_answer = "block-page"\n',
        '[policy] blocked_answer = "block-page": must be null, nxdomain or the IP address',
    ),
    (
        "[policy.agent]\nbeacon_max_rtt_ms = 5\n",
        "[policy.agent] beacon_max_rtt_ms = 5: must be at least 10",
    ),
    (
        "[policy.agent]\nbeacon_max_rtt_ms = 1001\n",
        "[policy.agent] beacon_max_rtt_ms = 1001: must be at most 1000",
    ),
    (
        '[policy.agent]\nflagged_apps = ["tor", " "]\n',
        '[policy.agent] flagged_apps = " ": each name must be 1-63 characters, not blank',
    ),
    (
        '[policy.agent]\nflagged_apps = "tor"\n',
        '[policy.agent] flagged_apps = "tor": must be a list of strings',
    ),
    (
        "[policy.agent]\nsniffer = false\n",
        "[policy.agent] sniffer = false: is not a known key",
    ),
]


@pytest.mark.parametrize(("toml", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_keys_are_refused_with_clear_messages(tmp_path: Path, toml: str, message: str) -> None:
    hub = make_hub(tmp_path, extra_toml=toml)
    with pytest.raises(ConfigError) as info:
        load_policy_settings(hub.config, SITE)
    assert message in str(info.value)
    assert str(hub.config.path) in str(info.value)


def test_check_reports_every_policy_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = (
        '[policy]\nblocked_answer = "page"\n'
        '[[policy.lists]]\ncategory = "adult"\nsource = "ftp://l.example/a"\n'
        '[[policy.lists]]\ncategory = "gambling"\nsource = "https://l.example/g"\nrefresh_h = 0\n'
        '[policy.groups.pupils]\nblock = ["gambling"]\nyoutube = "loud"\n'
        "[policy.agent]\nbeacon_max_rtt_ms = 2\n"
    )
    hub = make_hub(tmp_path, extra_toml=toml)
    code = main(["check", "--config", str(hub.config.path)])
    err = capsys.readouterr().err.strip().splitlines()
    problems = [
        line
        for line in err
        if line.startswith("hedgerow-hub check: ") and ": warning: " not in line
    ]
    assert code == 1
    needles = [
        "[policy] blocked_answer",
        '[policy.lists category="adult"] source',
        '[policy.lists category="gambling"] refresh_h',
        "[policy.groups.pupils] youtube",
        "[policy.agent] beacon_max_rtt_ms",
    ]
    assert len(problems) == len(needles), "\n".join(problems)
    for needle in needles:
        assert any(needle in p for p in problems), (needle, problems)
    assert err[-1].endswith(f": {len(needles)} problem(s)")


def test_the_laptop_agent_reads_the_document_as_written(tmp_path: Path) -> None:
    """The contract both sides keep: the agent's reader takes the hub's document whole."""
    from agent.laptop.policy_spec import read_policy

    hub = make_hub(tmp_path, extra_toml=POLICY)
    enrolled(tmp_path, hub, "lt-6", "year6", "pupil-laptop")
    policy = read_policy(7, device_document(tmp_path, hub, "lt-6"))
    assert [(s.category, s.source, s.statutory, s.refresh_h) for s in policy.lists] == [
        ("iwf", "https://lists.example/iwf.txt", True, 6),
        ("adult", "https://lists.example/adult.txt", False, 24),
        ("gambling", "http://127.0.0.1:8000/gambling.txt", False, 24),
    ]
    assert (policy.group, policy.block, policy.blocked_answer) == (
        "year6",
        ("adult", "iwf"),
        "nxdomain",
    )
    assert (policy.safesearch, policy.youtube, policy.block_bypass) == (True, "strict", False)
    assert (policy.block_encrypted_dns, policy.block_ech, policy.pupils) == (False, False, False)
    assert (policy.max_rtt_ms, policy.flagged_apps) == (80.0, ("openvpn", "tor", "Psiphon"))
