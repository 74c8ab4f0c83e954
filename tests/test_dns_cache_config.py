"""The answer cache's size: the school resolver's default, the engine's (what the laptop agent
keeps), and an explicit `[cache] max_entries`."""

from __future__ import annotations

from pathlib import Path

from agent.dns.config import load_config
from agent.dns.config.reader import SCHOOL_CACHE_ENTRIES
from agent.filter.spec import DEFAULT_CACHE_ENTRIES, CacheSpec
from tests.dns_support import free_dns_port, write_config


def test_the_school_resolver_keeps_a_larger_cache_than_the_engine_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port())
    assert load_config(path).spec.cache.max_entries == SCHOOL_CACHE_ENTRIES == 16_000
    assert CacheSpec().max_entries == DEFAULT_CACHE_ENTRIES == 10_000  # the laptop's engine


def test_an_explicit_cache_size_wins(tmp_path: Path) -> None:
    for size in (0, 2_500):
        path = write_config(
            tmp_path, ["127.0.0.1:5353"], free_dns_port(), extra=f"[cache]\nmax_entries = {size}\n"
        )
        assert load_config(path).spec.cache.max_entries == size
