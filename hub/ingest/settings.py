"""[ingest] in hub.toml: how many worker processes open envelopes beside the ingest thread, and
when a device whose envelopes are refused in a burst is throttled (hub.ingest.bursts)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from common.tomlconfig import Section
from hub.config import HubConfig
from hub.ingest.bursts import BurstLimits

AUTO = "auto"
DEFAULT_BURSTS = BurstLimits()
MAX_WORKERS = 64
DEFAULT_STALL_S = 90
AUTO_MAX = 4  # beyond this one ingest thread (store, rules, commit) cannot keep up anyway
WORKERS_RULE = (
    f'must be "{AUTO}" or a whole number from 0 to {MAX_WORKERS} '
    "(0: open envelopes in the ingest thread)"
)


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """How ingest runs."""

    workers: int  # opening worker processes; 0: the ingest thread opens envelopes itself
    bursts: BurstLimits = DEFAULT_BURSTS
    stall_s: int = DEFAULT_STALL_S  # the ingest loop still this long: stop pinging the watchdog


def auto_workers(cores: int | None = None) -> int:
    """One opening worker per core but the one the ingest thread and paho's thread share;
    at least one, at most AUTO_MAX."""
    cores = os.cpu_count() if cores is None else cores
    return max(1, min(AUTO_MAX, (cores or 2) - 1))


def load_ingest_settings(config: HubConfig) -> IngestSettings:
    """Read [ingest] strictly: workers = "auto" (the default) or 0..64."""
    table = config.table("ingest")
    section = Section("ingest", table, str(config.path))
    value = table.get("workers", AUTO)
    if value == AUTO:
        section.text("workers", AUTO)
        workers = auto_workers()
    elif type(value) is int and 0 <= value <= MAX_WORKERS:
        workers = int(section.integer("workers", lo=0, hi=MAX_WORKERS))
    else:
        section.fail("workers", value, WORKERS_RULE)
    default = DEFAULT_BURSTS
    bursts = BurstLimits(
        rejections=section.integer("throttle_refusals", default.rejections, lo=5, hi=1_000_000),
        window_s=section.integer("throttle_window_s", int(default.window_s), lo=1, hi=3600),
        cool_s=section.integer("throttle_seconds", int(default.cool_s), lo=1, hi=86_400),
    )
    stall_s = section.integer("stall_s", DEFAULT_STALL_S, lo=5, hi=3600)
    section.done()
    return IngestSettings(workers, bursts, int(stall_s))
