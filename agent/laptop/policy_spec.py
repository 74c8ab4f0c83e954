"""The device's signed policy, read into what the agent needs: the filter spec its local filter
is built from (the same engine as hedgerow-dns), the beacon keys, and how it reports.

The document is the hub's (docs/enrolment.md "Policies"). The agent reads it strictly enough to
never act on a half-understood policy: PolicyError on anything it cannot use, and the caller
keeps the previous policy.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.filter.lists.model import ListError, ListSpec
from agent.filter.spec import FilterSpec, GroupSpec, Network, UpstreamServer, UpstreamSpec
from common.errors import HedgerowError
from common.wire.errors import WireError
from common.wire.signing import VerifyKey

LOCAL_CLIENTS: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
DEFAULT_MAX_RTT_MS = 50.0
YOUTUBE = ("off", "moderate", "strict")
ON_SITE_GROUP = "on-site"  # the pass-through group: on site the school's Pi filters and records


class PolicyError(HedgerowError):
    """A signed policy the agent cannot use (the previous one stays)."""


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """What one accepted device policy says, for the agent."""

    version: int
    site: str
    group: str
    beacon_keys: tuple[VerifyKey, ...]
    lists: tuple[ListSpec, ...]
    block: tuple[str, ...]
    allow: tuple[str, ...]
    safesearch: bool
    youtube: str
    block_encrypted_dns: bool
    block_bypass: bool
    block_ech: bool
    pupils: bool
    blocked_answer: str
    counts_only: bool
    summary_interval_s: int
    max_rtt_ms: float
    flagged_apps: tuple[str, ...] | None  # None: the agent's built-in list

    def filter_spec(self, cache_dir: Path, upstream: UpstreamSpec) -> FilterSpec:
        """The spec of the local filter: this device's group, for local clients only."""
        group = GroupSpec(
            name=self.group,
            clients=LOCAL_CLIENTS,
            block=self.block,
            allow=self.allow,
            safesearch=self.safesearch,
            youtube=self.youtube,
            block_ech=self.block_ech,
            block_bypass=self.block_bypass,
            block_encrypted_dns=self.block_encrypted_dns,
            pupils=self.pupils,
        )
        return FilterSpec(
            lists=self.lists,
            groups=(group,),
            default_group=self.group,
            upstream=upstream,
            allow_clients=LOCAL_CLIENTS,
            list_cache_dir=cache_dir,
            blocked_answer=self.blocked_answer,
            rate_limit_qps=0,  # one laptop's own lookups: nothing to limit
        )


def on_site_spec(cache_dir: Path, pi: UpstreamServer, timeout_ms: int) -> FilterSpec:
    """On site everything goes to the school's Pi, which filters by the laptop's group and
    keeps the school's records complete; only our own names are answered here."""
    group = GroupSpec(
        name=ON_SITE_GROUP,
        clients=LOCAL_CLIENTS,
        block_bypass=False,
        block_encrypted_dns=False,
        pupils=False,
    )
    return FilterSpec(
        lists=(),
        groups=(group,),
        default_group=ON_SITE_GROUP,
        upstream=UpstreamSpec((pi,), timeout_ms=timeout_ms),
        allow_clients=LOCAL_CLIENTS,
        list_cache_dir=cache_dir,
        rate_limit_qps=0,
    )


def read_policy(version: int, document: Any) -> AgentPolicy:
    """The agent's view of a device policy document; raises PolicyError."""
    if not isinstance(document, dict):
        raise PolicyError("the policy has no document")
    try:
        return _read(version, document)
    except (KeyError, TypeError, ValueError, ListError, WireError, binascii.Error) as exc:
        raise PolicyError(f"policy version {version} cannot be used: {exc}") from exc


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings")
    return tuple(value)


def _flag(table: dict[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false")
    return value


def _read(version: int, doc: dict[str, Any]) -> AgentPolicy:
    group = doc.get("group") or doc.get("default_group")
    if not isinstance(group, str) or not group:
        raise TypeError("the policy names no group")
    keys = tuple(
        VerifyKey(base64.b64decode(k, validate=True))
        for k in _strings(doc.get("beacon_keys", []), "beacon_keys")
    )
    filt = doc.get("filter", {})
    if not isinstance(filt, dict):
        raise TypeError("filter must be a table")
    lists = []
    for raw in filt.get("lists", []):
        if not isinstance(raw, dict):
            raise TypeError("filter.lists entries must be tables")
        refresh = raw.get("refresh_h", 24)
        if not isinstance(refresh, int) or isinstance(refresh, bool):
            raise TypeError("refresh_h must be an integer")
        lists.append(
            ListSpec(
                category=str(raw["category"]),
                source=str(raw["source"]),
                statutory=_flag(raw, "statutory", False),
                refresh_h=refresh,
            )
        )
    settings = filt.get("group", {})
    if not isinstance(settings, dict):
        raise TypeError("filter.group must be a table")
    youtube = settings.get("youtube", "off")
    if youtube not in YOUTUBE:
        raise ValueError(f"youtube must be one of {', '.join(YOUTUBE)}")
    reporting = doc.get("reporting", {})
    if not isinstance(reporting, dict):
        raise TypeError("reporting must be a table")
    agent = doc.get("agent", {})
    if not isinstance(agent, dict):
        raise TypeError("agent must be a table")
    rtt = agent.get("beacon_max_rtt_ms", DEFAULT_MAX_RTT_MS)
    if not isinstance(rtt, int | float) or isinstance(rtt, bool) or not 1 <= rtt <= 2000:
        raise ValueError("agent.beacon_max_rtt_ms must be a number from 1 to 2000")
    flagged = agent.get("flagged_apps")
    interval = reporting.get("summary_interval_s", 300)
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise ValueError("reporting.summary_interval_s must be a positive integer")
    answer = filt.get("blocked_answer", "null")
    if not isinstance(answer, str):
        raise TypeError("filter.blocked_answer must be a string")
    return AgentPolicy(
        version=version,
        site=str(doc["site"]),
        group=group,
        beacon_keys=keys,
        lists=tuple(lists),
        block=_strings(doc.get("block", []), "block"),
        allow=_strings(settings.get("allow", []), "filter.group.allow"),
        safesearch=_flag(settings, "safesearch", False),
        youtube=str(youtube),
        block_encrypted_dns=_flag(settings, "block_encrypted_dns", True),
        block_bypass=_flag(settings, "block_bypass", True),
        block_ech=_flag(settings, "block_ech", False),
        pupils=_flag(settings, "pupils", group in ("pupils", "guests")),
        blocked_answer=answer,
        counts_only=_flag(reporting, "counts_only", False),
        summary_interval_s=interval,
        max_rtt_ms=float(rtt),
        flagged_apps=_strings(flagged, "agent.flagged_apps") if flagged is not None else None,
    )


def default_policy(group: str = "pupils") -> AgentPolicy:
    """Before any policy is accepted: no lists yet, the anti-bypass answers on (fail closed)."""
    return AgentPolicy(
        version=0,
        site="",
        group=group,
        beacon_keys=(),
        lists=(),
        block=(),
        allow=(),
        safesearch=False,
        youtube="off",
        block_encrypted_dns=True,
        block_bypass=True,
        block_ech=False,
        pupils=True,
        blocked_answer="null",
        counts_only=False,
        summary_interval_s=300,
        max_rtt_ms=DEFAULT_MAX_RTT_MS,
        flagged_apps=None,
    )
