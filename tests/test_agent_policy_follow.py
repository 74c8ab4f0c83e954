"""The laptop follows the hub's signed policies: a newer one is applied, the same one again is
nothing new, an older or forged one is refused and the kept one stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.laptop.policy_follow import PolicyRefused, check_policy, keep, kept_policy
from common.wire import topics
from hub.config import load_config
from hub.policy.publish import publish_all
from tests.enroll_fixtures import SITE, T0, Hub, make_hub
from tests.test_hub_policy_filter import enrolled


def published(hub: Hub, device: str, now_ms: int = T0) -> bytes:
    sent: dict[str, bytes] = {}
    db = hub.db()
    try:
        publish_all(db, hub.keys, hub.config, lambda t, p, r: sent.__setitem__(t, p), now_ms=now_ms)
    finally:
        db.close()
    return sent[topics.device_policy(SITE, device)]


def with_lists(hub: Hub, category: str) -> None:
    with open(hub.config.path, "a", encoding="utf-8") as handle:
        handle.write(
            f'\n[[policy.lists]]\ncategory = "{category}"\n'
            f'source = "https://lists.example/{category}.txt"\n'
        )


def test_newer_applied_same_ignored_older_and_forged_refused(tmp_path: Path) -> None:
    hub = make_hub(tmp_path / "hub")
    directory = enrolled(tmp_path, hub, "lt-1", "pupils", "pupil-laptop")
    first = kept_policy(directory)
    assert first is not None
    old = published(hub, "lt-1")
    with_lists(hub, "adult")
    hub = Hub(load_config(hub.config.path), hub.keys)  # hub.toml read again
    new = published(hub, "lt-1", T0 + 1000)
    checked = check_policy(directory, new, first.version)
    assert checked is not None
    message, policy = checked
    assert policy.version > first.version
    assert [spec.category for spec in policy.lists] == ["adult"]
    keep(directory, new, message)
    assert kept_policy(directory) == policy
    assert check_policy(directory, new, policy.version) is None  # retained again: nothing new
    with pytest.raises(PolicyRefused, match="older"):
        check_policy(directory, old, policy.version)
    other = make_hub(tmp_path / "other")  # another hub, another signing key
    (tmp_path / "x").mkdir()
    enrolled(tmp_path / "x", other, "lt-1", "pupils", "pupil-laptop")
    with pytest.raises(PolicyRefused, match="refused"):
        check_policy(directory, published(other, "lt-1"), policy.version)
    assert kept_policy(directory) == policy  # the kept one stays
