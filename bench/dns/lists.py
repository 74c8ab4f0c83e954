"""The benchmark's blocklist and query files, generated from a fixed seed.

One million unique, plausible domains are written three ways (a plain list for hedgerow-dns,
``address=/name/0.0.0.0`` for dnsmasq, ``local-zone: "name." always_null`` for unbound), with
query files for dnsperf drawn from them and from a separate set of allowed names.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_ONSETS: tuple[str, ...] = (
    *("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z"),
    *("br", "ch", "cl", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "sk", "sl", "sn", "sp", "st"),
    *("str", "th", "tr"),
)
_VOWELS: tuple[str, ...] = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "y")
_CODAS: tuple[str, ...] = ("", "", "", "n", "r", "s", "t", "x", "ck", "ll", "ng", "st")
# .com dominates real lists, so it is drawn eight times as often as any other TLD.
_TLDS: tuple[str, ...] = (
    *("com",) * 8,
    *("net", "org", "io", "co.uk", "info", "biz", "xyz", "top", "online", "site", "club"),
    *("app", "de", "fr", "ru", "cn", "tk", "me", "tv"),
)
_PREFIXES: tuple[str, ...] = (
    *("ads", "ad", "track", "cdn", "stats", "pixel", "click", "metrics", "api", "www", "m"),
    *("static", "img", "tag", "beacon", "log", "go", "s", "media", "promo"),
)


@dataclass(frozen=True)
class Mix:
    """One query mix: its name, what it measures, and its query file."""

    name: str
    description: str
    path: Path


@dataclass(frozen=True)
class BenchData:
    """Every file the systems and dnsperf read, all under one directory."""

    directory: Path
    blocked_count: int
    plain_list: Path
    dnsmasq_conf: Path
    unbound_conf: Path
    mixes: tuple[Mix, ...]
    probe_blocked: str
    probe_allowed: str
    allowed_pool: tuple[str, ...] = ()  # every allowed name generated (for the cold mix)


def _word(rng: random.Random) -> str:
    syllables = rng.choice((1, 1, 2, 2, 2, 3))
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + (
        rng.choice(_CODAS)
    )


def _domain(rng: random.Random) -> str:
    shape = rng.random()
    tld = rng.choice(_TLDS)
    if shape < 0.35:
        return f"{_word(rng)}{_word(rng)}.{tld}"
    if shape < 0.55:
        return f"{_word(rng)}-{_word(rng)}.{tld}"
    if shape < 0.85:
        return f"{rng.choice(_PREFIXES)}.{_word(rng)}{_word(rng)}.{tld}"
    if shape < 0.95:
        return f"{_word(rng)}{rng.randrange(1, 1000)}.{tld}"
    return f"{rng.choice(_PREFIXES)}{rng.randrange(1, 100)}.{_word(rng)}-{_word(rng)}.{tld}"


def _parents(name: str) -> Iterable[str]:
    labels = name.split(".")
    return (".".join(labels[i:]) for i in range(len(labels)))


def generate_names(blocked: int, allowed: int, seed: int) -> tuple[list[str], list[str]]:
    """Unique blocked names, and allowed names that neither match nor sit under any of them."""
    rng = random.Random(seed)
    seen: set[str] = set()
    blocked_names: list[str] = []
    while len(blocked_names) < blocked:
        name = _domain(rng)
        if name not in seen and len(name) < 250:
            seen.add(name)
            blocked_names.append(name)
    allowed_names: list[str] = []
    taken: set[str] = set()
    while len(allowed_names) < allowed:
        name = _domain(rng)
        # Every system blocks subdomains of a listed name, so an allowed name must have no
        # listed parent either; otherwise the "allowed" mix would quietly include blocks.
        if name not in taken and not any(p in seen for p in _parents(name)):
            taken.add(name)
            allowed_names.append(name)
    return blocked_names, allowed_names


def zipf_sample(names: Sequence[str], count: int, exponent: float, rng: random.Random) -> list[str]:
    """Draw count names where the k-th most popular has weight 1/k**exponent."""
    weights = (1.0 / (rank**exponent) for rank in range(1, len(names) + 1))
    cumulative = list(itertools.accumulate(weights))
    return rng.choices(names, cum_weights=cumulative, k=count)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="ascii") as out:
        out.writelines(f"{line}\n" for line in lines)


def write_bench_data(
    directory: Path,
    blocked: int = 1_000_000,
    allowed: int = 10_000,
    mix_queries: int = 200_000,
    blocked_share: float = 0.2,
    seed: int = 20240901,
    allowed_pool: int = 0,
) -> BenchData:
    """Generate the names and write lists, server list configs and dnsperf query files.
    `allowed_pool`: generate this many allowed names in all (the first `allowed` are the
    same either way, and only they feed the mixes here)."""
    directory.mkdir(parents=True, exist_ok=True)
    blocked_names, pool = generate_names(blocked, max(allowed, allowed_pool), seed)
    allowed_names = pool[:allowed]
    rng = random.Random(seed + 1)

    plain = directory / "blocklist.txt"
    _write_lines(plain, blocked_names)
    dnsmasq = directory / "dnsmasq-blocklist.conf"
    _write_lines(dnsmasq, (f"address=/{n}/0.0.0.0" for n in blocked_names))
    unbound = directory / "unbound-blocklist.conf"
    _write_lines(unbound, (f'local-zone: "{n}." always_null' for n in blocked_names))

    shuffled_blocked = rng.sample(blocked_names, len(blocked_names))
    shuffled_allowed = rng.sample(allowed_names, len(allowed_names))
    blocked_q = directory / "queries-blocked.txt"
    _write_lines(blocked_q, (f"{n} A" for n in shuffled_blocked))
    allowed_q = directory / "queries-allowed.txt"
    _write_lines(allowed_q, (f"{n} A" for n in shuffled_allowed))

    # Popularity is Zipf-like over a random ranking, so popular names are spread through the
    # list rather than sitting at its start.
    n_blocked = round(mix_queries * blocked_share)
    mix = zipf_sample(shuffled_blocked, n_blocked, 1.0, rng)
    mix += zipf_sample(shuffled_allowed, mix_queries - n_blocked, 1.0, rng)
    rng.shuffle(mix)
    mix_q = directory / "queries-mix.txt"
    _write_lines(mix_q, (f"{n} A" for n in mix))

    share = f"{blocked_share:.0%}"
    mixes = (
        Mix("blocked", f"all blocked: {blocked:,} listed names, uniform, shuffled", blocked_q),
        Mix("allowed", f"all allowed, cache warm: {allowed:,} names, uniform", allowed_q),
        Mix("mix", f"{share} blocked / rest allowed, Zipf (s=1) popularity", mix_q),
    )
    return BenchData(
        directory=directory,
        blocked_count=blocked,
        plain_list=plain,
        dnsmasq_conf=dnsmasq,
        unbound_conf=unbound,
        mixes=mixes,
        probe_blocked=blocked_names[-1],
        probe_allowed=allowed_names[0],
        allowed_pool=tuple(pool),
    )
