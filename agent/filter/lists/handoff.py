"""A due refresh handed to a child process and its outcome handed back, as JSON.

The server sends its refresher's lists, settings, status and statistics and which lists are
due; the child refreshes those (downloading, parsing and writing the compiled index) with a
refresher of its own started from that state, and sends back every list's status and
statistics and whether it wrote a new index (agent/dns/prebuild.py runs it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.filter.lists.model import ListSpec, ListStats, ListStatus
from agent.filter.lists.refresh import ListRefresher


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a refresh child learned: each list's status and statistics, and whether the
    compiled index in the cache directory is a new one to load."""

    status: tuple[ListStatus, ...]
    stats: tuple[ListStats, ...]
    rebuilt: bool


def job_of(refresher: ListRefresher, due: list[ListSpec], now: float) -> bytes:
    """The refresh of `due` as the child is to run it, at epoch seconds `now`."""
    return json.dumps(
        {
            "cache_dir": str(refresher.cache_dir),
            "min_ratio": refresher.min_ratio,
            "timeout": refresher.timeout,
            "now": now,
            "specs": [asdict(spec) for spec in refresher.specs],
            "due": [refresher.specs.index(spec) for spec in due],
            "status": [asdict(one) for one in refresher.status()],
            "stats": [asdict(one) for one in refresher.stats()],
        }
    ).encode()


def run_job(raw: bytes) -> bytes:
    """In the child: refresh the due lists of a job and say what came of it. A bad download
    never raises (the refresher keeps the old copy and records the problem); a malformed job
    does (ValueError, KeyError, TypeError)."""
    job: dict[str, Any] = json.loads(raw)
    now = float(job["now"])
    specs = [ListSpec(**fields) for fields in job["specs"]]
    refresher = ListRefresher(
        specs,
        Path(job["cache_dir"]),
        min_ratio=float(job["min_ratio"]),
        timeout=float(job["timeout"]),
        clock=lambda: now,
        compiled=True,
    )
    refresher.restore(
        [ListStatus(**fields) for fields in job["status"]],
        [ListStats(**fields) for fields in job["stats"]],
    )
    before = refresher.index
    after = refresher.refresh([specs[i] for i in job["due"]])
    return json.dumps(
        {
            "rebuilt": after is not before,
            "status": [asdict(one) for one in refresher.status()],
            "stats": [asdict(one) for one in refresher.stats()],
        }
    ).encode()


def handoff_of(raw: bytes) -> Handoff:
    """The child's answer; raises ValueError, KeyError or TypeError if it is malformed."""
    answer: dict[str, Any] = json.loads(raw)
    return Handoff(
        tuple(ListStatus(**fields) for fields in answer["status"]),
        tuple(ListStats(**fields) for fields in answer["stats"]),
        bool(answer["rebuilt"]),
    )
