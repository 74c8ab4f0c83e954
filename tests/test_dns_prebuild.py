"""The reload builder child (agent/dns/prebuild.py): each way it can end, as the server sees it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.dns.prebuild import Built, prebuild, refresh
from agent.filter.lists import ListRefresher, ListSpec
from agent.filter.lists.copies import slot
from common.errors import HedgerowError
from tests.dns_support import Clock, free_dns_port, write_config


def test_a_bad_config_refuses_the_reload_with_the_childs_reason(tmp_path: Path) -> None:
    with pytest.raises(HedgerowError, match=r"refused the config or lists: .*missing\.toml"):
        asyncio.run(prebuild(tmp_path / "missing.toml"))


def test_a_child_that_overruns_is_killed_and_the_reload_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["127.0.0.1:9"], free_dns_port())
    with pytest.raises(HedgerowError, match=r"took over 0 s \(killed\)"):
        asyncio.run(prebuild(config, timeout_s=0.001))


def test_without_the_pinned_seed_the_child_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child cannot write an index this server could load: the caller parses itself."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert "PYTHONHASHSEED" not in os.environ
    config = write_config(tmp_path, ["127.0.0.1:9"], free_dns_port())
    assert asyncio.run(prebuild(config)) is Built.UNAVAILABLE


def test_without_the_pinned_seed_no_refresh_child_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No child refreshes (None): the server refreshes in a worker thread of its own. The
    child never started, so the cache still holds the copy taken at load."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    source = tmp_path / "local.txt"
    source.write_text("casino.example\n")
    spec = ListSpec("gambling", str(source))
    clock = Clock(1_000_000.0)
    refresher = ListRefresher([spec], tmp_path / "cache", clock=clock)
    refresher.load()
    source.write_text("casino.example\nadded.example\n")
    clock.now += 24 * 3600
    assert refresher.due() == [spec]
    assert asyncio.run(refresh(refresher, clock.now)) is None
    note = slot(tmp_path / "cache", str(source)).read_note()
    assert note is not None and note.entries == 1
