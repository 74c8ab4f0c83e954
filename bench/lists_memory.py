"""Memory, build time and lookup rate of the blocklist index with 1,000,000 domains, against
a plain Python set of the same names as the reference (run: python bench/lists_memory.py).

Each side runs in a fresh subprocess so RSS (VmRSS from /proc/self/status) is its own.
"""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COUNT = 1_000_000
QUERIES = 200_000
TLDS = ["com", "net", "org", "co.uk", "io", "xyz", "ru", "de", "info", "org.uk"]

CHILD = r"""
import gc, json, random, sys, time
from pathlib import Path

def rss_kb(field="VmRSS:"):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")

mode, list_path, query_path = sys.argv[1:4]
import agent.filter.lists as lists
before = rss_kb()
start = time.perf_counter()
if mode == "index":
    index, stats = lists.load_lists([lists.ListSpec("bench", list_path)], None)
    lookup = index.lookup
else:
    with open(list_path) as f:
        names = {line.rstrip("\n") for line in f}
    def lookup(qname):
        for suffix in lists.suffixes(qname):
            if suffix in names:
                return 1
        return 0
built = time.perf_counter() - start
gc.collect()
gc.freeze()
after = rss_kb()
queries = Path(query_path).read_text().split("\n")
start = time.perf_counter()
hits = 0
for q in queries:
    if lookup(q):
        hits += 1
took = time.perf_counter() - start
print(json.dumps({"before_kb": before, "after_kb": after, "peak_kb": rss_kb("VmHWM:"), "build_s": built,
                  "lookups_per_s": len(queries) / took, "hits": hits}))
"""


def random_name(rng: random.Random) -> str:
    """A random 2-3 label domain."""
    alphabet = string.ascii_lowercase + string.digits
    labels = [
        "".join(rng.choices(alphabet, k=rng.randint(5, 15))) for _ in range(rng.choice((1, 1, 2)))
    ]
    return ".".join([*labels, rng.choice(TLDS)])


def run(mode: str, list_path: Path, query_path: Path) -> dict[str, float]:
    """Run one side in a fresh interpreter and return its measurements."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(list_path), str(query_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    """Generate the data, measure both sides, print a table and the ratios."""
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-") as tmp:
        list_path = Path(tmp) / "domains.txt"
        names = [random_name(rng) for _ in range(COUNT)]
        list_path.write_text("\n".join(names) + "\n")
        # Half hits (subdomains of listed names, 3-4 labels), half misses.
        queries = [f"www.{rng.choice(names)}" for _ in range(QUERIES // 2)]
        queries += [f"a.{random_name(rng)}" for _ in range(QUERIES // 2)]
        rng.shuffle(queries)
        query_path = Path(tmp) / "queries.txt"
        query_path.write_text("\n".join(queries))
        del names, queries
        started = time.perf_counter()
        index = run("index", list_path, query_path)
        reference = run("set", list_path, query_path)
        print(f"{COUNT:,} domains, {QUERIES:,} queries ({time.perf_counter() - started:.1f} s)")
    print(f"{'':12}{'RSS before':>12}{'RSS after':>12}{'peak':>10}{'build s':>10}{'lookups/s':>12}")
    for label, r in (("index", index), ("python set", reference)):
        print(
            f"{label:12}{r['before_kb'] / 1024:>10.1f}MB{r['after_kb'] / 1024:>10.1f}MB"
            f"{r['peak_kb'] / 1024:>8.1f}MB"
            f"{r['build_s']:>10.2f}{r['lookups_per_s']:>12,.0f}"
        )
    grown = (index["after_kb"] - index["before_kb"]) / max(
        1, reference["after_kb"] - reference["before_kb"]
    )
    print(f"memory growth index/set: {grown:.2f}")
    print(f"total RSS index/set:     {index['after_kb'] / reference['after_kb']:.2f}")
    print(f"build time index/set:    {index['build_s'] / reference['build_s']:.2f}")
    print(f"lookup rate index/set:   {index['lookups_per_s'] / reference['lookups_per_s']:.2f}")
    if index["hits"] != reference["hits"]:
        print(f"MISMATCH: index hits {index['hits']} != set hits {reference['hits']}")


if __name__ == "__main__":
    main()
