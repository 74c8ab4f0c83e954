"""Blocklists for hedgerow-dns: parsing, the compact category index, refresh and explain.

Formats (detected per file): hosts (`0.0.0.0 name ...`), plain (`name`, `*.name`) and adblock
(`||name^`, `@@||name^`, `*.name`, `! comment`). A listed name blocks itself and all its
subdomains; `*.name` (or adblock `.name^`) blocks only its subdomains; an exception
(`@@||name^`) unblocks the name and its subdomains for that list's category, and exceptions
always beat blocks (`$important` is not honoured). Unsupported rules (paths, cosmetic `##`,
non-domain modifiers, regexes, URL rules, IP addresses) are skipped and counted; bad names
are counted as invalid.

Typical server use:

    refresher = ListRefresher(specs, cache_dir)
    index, stats = refresher.load()          # at startup; ListError if a list is unusable
    mask = index.lookup(qname)               # hot path; qname already normalise()d
    index = refresher.refresh()              # every few minutes, in an executor thread
"""

from agent.filter.lists.index import CategoryIndex, categories_of
from agent.filter.lists.load import check_lists, load_lists
from agent.filter.lists.model import ListError, ListMatch, ListSpec, ListStats, ListStatus
from agent.filter.lists.names import normalise, suffixes
from agent.filter.lists.provenance import explain
from agent.filter.lists.refresh import ListRefresher

__all__ = [
    "CategoryIndex",
    "ListError",
    "ListMatch",
    "ListRefresher",
    "ListSpec",
    "ListStats",
    "ListStatus",
    "categories_of",
    "check_lists",
    "explain",
    "load_lists",
    "normalise",
    "suffixes",
]
