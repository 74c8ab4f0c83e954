"""The commented starter hedgerow-dns.toml for a primary school: what `hedgerow-dns init`
writes, and what firmware-config/hedgerow-dns.example.toml holds (a test keeps the two equal).

It passes `check` as written, with no network: every [[lists]] entry and every group's `block`
is commented out, since a list is a file or URL only the school can supply (the statutory IWF
and police-assessed terrorism lists come under licence). Turning one on is deleting the `#` in
front of its lines. Setting lines are commented as `#key = ...` (no space), prose as `# ...`.
The category names are the ones the hub knows (common/categories.py), so every blocked lookup
reaches a hub rule.
"""

from __future__ import annotations

import sys

from common.categories import BYPASS, lookup

LIST_DIR = "/etc/hedgerow/lists"

# Statutory in England (KCSIE, DfE filtering standards): blocked for everyone, never allowed.
STATUTORY = ("iwf", "terrorism")
# What each group blocks, beyond the statutory lists: the UK Safer Internet Centre's
# "appropriate filtering" content for primary-age pupils, and the ways round the filter.
RECOMMENDED: dict[str, tuple[str, ...]] = {
    "pupils": (
        "self_harm", "extremism", "adult", "violence", "discrimination", "drugs", "gambling",
        "malware", "phishing", "piracy", "social_networks", "doh", "vpn", "proxy", "tor",
    ),
    "staff": ("self_harm", "extremism", "adult", "gambling", "malware", "phishing"),
    "guests": (
        "self_harm", "extremism", "adult", "violence", "discrimination", "drugs", "gambling",
        "malware", "phishing", "piracy", "doh", "vpn", "proxy", "tor",
    ),
}  # fmt: skip
CLIENTS = {"pupils": "192.168.10.0/24", "staff": "192.168.20.0/24", "guests": "192.168.30.0/24"}

HEAD = """\
# hedgerow-dns.toml: a starter for a primary school, written by `hedgerow-dns init`.
# docs/dns.md explains every key. After any change:  hedgerow-dns check --config THIS-FILE
#
# Lines like `#key = value` are settings turned off: delete the `#` to turn one on. As written
# this file passes `check`, but it blocks nothing except the anti-bypass names (encrypted-DNS
# canaries, iCloud Private Relay) until you turn on the [[lists]] below and each group's block.

[server]
listen = ["0.0.0.0:53", "[::]:53"]
# The school's own ranges; everyone else is refused. Every group's clients must be inside.
allow_clients = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128"]
rate_limit_qps = 200                        # per client address; 0 turns it off
#metrics = "127.0.0.1:9153"                 # Prometheus /metrics (keep it on loopback)
list_cache_dir = "/var/cache/hedgerow/lists"  # last good copies, served if a fetch fails

[upstream]
# Your ISP's or local authority's resolvers, or a public one over TLS, e.g.
# "tls://9.9.9.9:853#dns.quad9.net". Tried in order.
servers = ["tls://9.9.9.9:853#dns.quad9.net", "tls://149.112.112.112:853#dns.quad9.net"]
timeout_ms = 1500
"""

LISTS_HEAD = """
# The lists. Each `source` is a file path or an https:// URL from your filtering list
# provider; `check` reads every file and downloads every URL it has no cached copy of.
# category names are the ones the hub knows (docs/categories.md), so its alerts cover them.
"""

TAIL = """
[default]
group = "pupils"          # clients in no group's range are treated as pupils (the safest)
blocked_answer = "null"   # 0.0.0.0 / ::; or "nxdomain", or the IP address of a block page

# Reporting to the hub, once `hedgerow-dns enroll` has run (docs/enrolment.md):
#[report]
#hub = "mqtts://hub.example.sch.uk:8883"
#identity = "/var/lib/hedgerow/dns"
#immediate = ["iwf", "terrorism", "self_harm", "extremism"]
"""


def _list_entry(category: str, statutory: bool) -> str:
    shared = lookup(category)
    assert shared is not None and shared.name == category, category  # the hub's own name
    lines = [f"\n# {category}: {shared.meaning}"]
    if statutory:
        lines.append(
            "# Blocked for every group; nothing can allow it. Licensed: ask your provider."
        )
    lines += [
        "#[[lists]]",
        f'#category = "{category}"',
        f'#source = "{LIST_DIR}/{category}.txt"',
    ]
    if statutory:
        lines.append("#statutory = true")
    return "\n".join(lines) + "\n"


def _group(name: str) -> str:
    lines = [
        f"\n[groups.{name}]",
        f'clients = ["{CLIENTS[name]}"]',
        "# Recommended; turn it on once each category has a [[lists]] entry above:",
        "#block = [",
        *_wrapped([f'"{c}",' for c in RECOMMENDED[name]], "#    "),
        "#]",
    ]
    if name == "pupils":
        lines += [
            'allow = []                # e.g. ["bbc.co.uk"]: let through despite block',
            "safesearch = true         # Google, Bing, DuckDuckGo forced safe",
            'youtube = "strict"',
            "# With block on, social networks could be blocked only in school hours:",
            '#schedule = { social_networks = "mon-fri 08:00-16:00" }',
        ]
    elif name == "staff":
        lines += ["safesearch = false", 'youtube = "moderate"']
    else:
        lines += ["safesearch = true", 'youtube = "strict"']
    return "\n".join(lines) + "\n"


def _wrapped(words: list[str], prefix: str, width: int = 92) -> list[str]:
    """Words joined by spaces into lines of at most `width`, each starting with `prefix`."""
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(prefix + line + " " + word) > width:
            lines.append(prefix + line)
            line = ""
        line = f"{line} {word}" if line else word
    return [*lines, prefix + line] if line else lines


def starter_text() -> str:
    """The whole commented starter config."""
    listed = dict.fromkeys([*STATUTORY, *(c for cs in RECOMMENDED.values() for c in cs)])
    entries = "".join(_list_entry(c, c in STATUTORY) for c in listed)
    groups = "".join(_group(name) for name in RECOMMENDED)
    bypass = (
        f"\n# The filter's own anti-bypass answers (category {BYPASS}) are on for every group\n"
        "# (block_bypass = true): Firefox's DoH canary, iCloud Private Relay, resolver.arpa.\n"
    )
    return HEAD + LISTS_HEAD + entries + bypass + groups + TAIL


if (
    __name__ == "__main__"
):  # python -m agent.dns.starter > firmware-config/hedgerow-dns.example.toml
    sys.stdout.write(starter_text())
