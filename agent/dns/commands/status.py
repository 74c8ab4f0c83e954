"""status: how the running filter is doing, read from its own metrics endpoint ([server] metrics).

One screen for the network manager: whether it answers, how many queries it has answered, the
cache, and every list it is serving without (missing at start and being retried) or failing to
refresh. Exit status 0 when all is well, 1 when the filter is not reachable or a list is missing.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import HedgerowError

TIMEOUT_S = 3.0


@dataclass
class Status:
    """What the metrics endpoint said."""

    endpoint: str
    queries: int = 0
    by_verdict: dict[str, int] = field(default_factory=dict)
    cache_hit_ratio: float | None = None
    lists_with_problems: int = 0
    missing: list[dict[str, str]] = field(default_factory=list)
    fetch_failures: list[dict[str, str | int]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No list is missing."""
        return not self.missing


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add status to the hedgerow-dns parser."""
    p = sub.add_parser(
        "status",
        help="the running filter's state: queries, cache, lists missing or failing to refresh",
        description="Reads the running server's metrics endpoint ([server] metrics). Exit 0 "
        "when healthy, 1 when it cannot be reached or a list is missing.",
    )
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)


def read_status(endpoint: str, text: str) -> Status:
    """Parse the Prometheus text the filter serves into a Status."""
    from prometheus_client.parser import text_string_to_metric_families

    status = Status(endpoint)
    verdicts: defaultdict[str, int] = defaultdict(int)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "hedgerow_dns_queries_total":
                verdicts[labels.get("verdict", "")] += int(sample.value)
            elif sample.name == "hedgerow_dns_cache_hit_ratio":
                status.cache_hit_ratio = float(sample.value)
            elif sample.name == "hedgerow_dns_lists_with_problems":
                status.lists_with_problems = int(sample.value)
            elif sample.name == "hedgerow_dns_list_missing" and sample.value:
                status.missing.append({"category": labels["category"], "list": labels["list"]})
            elif sample.name == "hedgerow_dns_list_fetch_failures_total" and sample.value:
                status.fetch_failures.append(
                    {"category": labels["category"], "list": labels["list"],
                     "failures": int(sample.value)}
                )  # fmt: skip
    status.by_verdict = dict(sorted(verdicts.items()))
    status.queries = sum(verdicts.values())
    return status


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running filter's status; exit 1 if unreachable or a list is missing."""
    import urllib.error
    import urllib.request

    from agent.dns.config import load_config

    config = load_config(args.config)
    endpoint = config.server.metrics
    if endpoint is None:
        raise HedgerowError(
            f"{args.config}: [server] metrics is not set, so the running filter has no status "
            'to read: set it, e.g. metrics = "127.0.0.1:9153", and restart'
        )
    _, _, shown = endpoint.local()
    url = f"http://{shown}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            text = reply.read(8 * 1024 * 1024).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise HedgerowError(
            f"the filter's metrics at {url} do not answer ({exc}): is hedgerow-dns serve running?"
        ) from exc
    status = read_status(shown, text)
    if args.json:
        print(json.dumps({**asdict(status), "healthy": status.healthy}, indent=2))
        return 0 if status.healthy else 1
    print(f"hedgerow-dns at {shown}: {'healthy' if status.healthy else 'PROBLEMS'}")
    verdicts = ", ".join(f"{v} {n}" for v, n in status.by_verdict.items()) or "none yet"
    print(f"  queries answered: {status.queries} ({verdicts})")
    if status.cache_hit_ratio is not None:
        print(f"  cache hit ratio: {status.cache_hit_ratio:.0%}")
    for item in status.missing:
        print(
            f"  MISSING list {item['list']} (category {item['category']}): served without it, "
            "retried with backoff; see the log"
        )
    for failed in status.fetch_failures:
        print(
            f"  list {failed['list']} (category {failed['category']}): {failed['failures']} "
            "failed fetch(es) since start"
        )
    if status.lists_with_problems and not status.missing:
        print(f"  {status.lists_with_problems} list(s) served from a last good copy")
    return 0 if status.healthy else 1
