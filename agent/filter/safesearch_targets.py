"""SafeSearch and YouTube restriction: which names are answered with a CNAME to which target.

The targets are the vendors' documented DNS-level switches: forcesafesearch.google.com,
restrict.youtube.com / restrictmoderate.youtube.com, strict.bing.com, safe.duckduckgo.com.
"""

from __future__ import annotations

from agent.filter.data import google_suffixes

GOOGLE_TARGET = "forcesafesearch.google.com"
BING_TARGET = "strict.bing.com"
DUCKDUCKGO_TARGET = "safe.duckduckgo.com"
YOUTUBE_TARGETS = {"strict": "restrict.youtube.com", "moderate": "restrictmoderate.youtube.com"}

# Every search domain Google lists (https://www.google.com/supported_domains, shipped as
# agent/filter/data/google_domains.txt): a pupil may type any of them, and www.google.ae
# unrewritten is unfiltered search.
GOOGLE_SUFFIXES = google_suffixes()
GOOGLE_NAMES = tuple(
    name for suffix in GOOGLE_SUFFIXES for name in (f"google.{suffix}", f"www.google.{suffix}")
)
YOUTUBE_NAMES = (
    "youtube.com",
    "www.youtube.com",
    "m.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
)
BING_NAMES = ("bing.com", "www.bing.com")
DUCKDUCKGO_NAMES = ("duckduckgo.com", "www.duckduckgo.com", "start.duckduckgo.com")


def targets_for(safesearch: bool, youtube: str) -> dict[str, str]:
    """Name -> CNAME target for a group's settings (empty when both are off)."""
    targets: dict[str, str] = {}
    if safesearch:
        targets.update(dict.fromkeys(GOOGLE_NAMES, GOOGLE_TARGET))
        targets.update(dict.fromkeys(BING_NAMES, BING_TARGET))
        targets.update(dict.fromkeys(DUCKDUCKGO_NAMES, DUCKDUCKGO_TARGET))
    if youtube in YOUTUBE_TARGETS:
        targets.update(dict.fromkeys(YOUTUBE_NAMES, YOUTUBE_TARGETS[youtube]))
    return targets
