"""A cold start split over two processes (lists/split.py) gives exactly what one pass gives.

Each case runs in a fresh interpreter: a forked child is only used while the process has one
thread, which the test process (with its services) does not promise. The script compares the
split result with the one-pass result and reports how many children actually ran.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, os, sys
from pathlib import Path
from agent.filter.lists import index as I, parser as R, split as S
from agent.filter.lists.model import ListError

started = []
original = S.Forked.__init__
def counting(self, work):
    if os.environ.get("CHILD_FAILS"):
        def work():
            raise RuntimeError("the child fails")
    original(self, work)
    started.append(self.started)
S.Forked.__init__ = counting

paths = [Path(p) for p in sys.argv[1:]]

def parse_all(split):
    R.SPLIT_MIN_BYTES = 64 << 10 if split else 1 << 60
    out = []
    for i, path in enumerate(paths):
        try:
            out.append(R.parse_file(path, str(path), f"c{i}"))
        except ListError as exc:
            out.append(str(exc))
    return out

one, two = parse_all(False), parse_all(True)
parsed = [p for p in one if not isinstance(p, str)]
categories = tuple(p.stats.category for p in parsed)

def table(split):
    I.SPLIT_MIN = 1000 if split else 1 << 60
    index = I.build_index(categories, parsed, frozenset(categories[:1]))
    parts = index.parts()
    slots = {k: tuple(m[i] for m in parts.masks) for i, k in enumerate(parts.keys) if k}
    return index, slots

(index1, slots1), (index2, slots2) = table(False), table(True)

# consume=True: the table is filled in a child (which splits it again) and only read back
# here, after this process dropped the hashes; if that child fails, ChildBuildFailed.
fresh = [p for p in parse_all(False) if not isinstance(p, str)]
try:
    consumed = I.build_index(categories, fresh, frozenset(categories[:1]), consume=True)
    parts = consumed.parts()
    consume = {k: tuple(m[i] for m in parts.masks) for i, k in enumerate(parts.keys) if k} == slots1
except I.ChildBuildFailed:
    consume = "failed"
print(json.dumps({
    "parse_same": [a == b for a, b in zip(one, two)],
    "errors": [p for p in two if isinstance(p, str)],
    "table_same": slots1 == slots2,
    "consume_same": consume,
    "hashes_dropped": all(len(h) == 0 for p in fresh for h in p.kinds.values()),
    "size": [len(index1), len(index2)],
    "children": sum(started),
}))
"""


def run(*paths: Path, child_fails: bool = False) -> dict[str, object]:
    env = {**os.environ, "CHILD_FAILS": "1" if child_fails else ""}
    result: dict[str, object] = script(SCRIPT, [str(p) for p in paths], env)[0]
    return result


def script(code: str, args: list[str], env: dict[str, str] | None = None) -> tuple[Any, str]:
    """Run `code` in a fresh interpreter: (its stdout as JSON, its stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def names(rng: random.Random, count: int) -> list[str]:
    return [f"n{rng.getrandbits(40):x}.example{rng.randrange(50)}.com" for _ in range(count)]


def odd_lines(rng: random.Random, count: int) -> list[str]:
    """Comments, blanks, invalid names and unsupported rules scattered through a list."""
    return [
        rng.choice(["# a comment", "", "   ", "bad..name", "1.2.3.4", "Ünïcode.example", "x.com."])
        for _ in range(count)
    ]


def mixed(rng: random.Random, lines: list[str], extra: list[str]) -> str:
    for line in extra:
        lines.insert(rng.randrange(len(lines)), line)
    return "\r\n".join(lines[: len(lines) // 2]) + "\n" + "\n".join(lines[len(lines) // 2 :]) + "\n"


@pytest.mark.parametrize("child_fails", [False, True], ids=["split", "child-fails"])
def test_each_format_parses_and_indexes_the_same_split_or_not(
    tmp_path: Path, child_fails: bool
) -> None:
    """Split or not, and if the child dies the parent does its half: the same result."""
    rng = random.Random(7)
    plain = tmp_path / "plain.txt"
    plain.write_text(mixed(rng, names(rng, 20_000), odd_lines(rng, 300)), encoding="utf-8")
    hosts = tmp_path / "hosts.txt"
    host_lines = [f"0.0.0.0 {n}" for n in names(rng, 20_000)] + ["127.0.0.1 localhost"]
    hosts.write_text(mixed(rng, host_lines, odd_lines(rng, 300)), encoding="utf-8")
    adblock = tmp_path / "adblock.txt"
    rules = [f"||{n}^" for n in names(rng, 20_000)]
    rules += [f"@@||{n}^" for n in names(rng, 500)] + [f"*.{n}" for n in names(rng, 500)]
    rules += ["! comment", "[Adblock Plus 2.0]", "##.banner", "||ads.example.com^$third-party"]
    adblock.write_bytes(b"\xef\xbb\xbf" + mixed(rng, rules, odd_lines(rng, 300)).encode())
    # The same names in two lists: their slots must merge the same way.
    again = tmp_path / "again.txt"
    again.write_text(plain.read_text(encoding="utf-8"), encoding="utf-8")

    result = run(plain, hosts, adblock, again, child_fails=child_fails)

    assert result["parse_same"] == [True, True, True, True]
    assert result["errors"] == []
    assert result["table_same"] is True
    sizes = result["size"]
    assert isinstance(sizes, list) and sizes[0] == sizes[1] > 40_000
    # four lists parsed in halves, one table filled in halves, one table filled by a child
    assert result["children"] == 6
    assert result["consume_same"] == ("failed" if child_fails else True)
    assert result["hashes_dropped"] is True


@pytest.mark.parametrize("where", ["first", "second"])
def test_an_error_in_either_half_is_the_error_one_pass_reports(tmp_path: Path, where: str) -> None:
    rng = random.Random(11)
    lines = names(rng, 20_000)
    lines.insert(100 if where == "first" else 19_000, "nul\0here.com")
    path = tmp_path / "broken.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run(path)

    assert result["parse_same"] == [True]  # the same ListError text, split or not
    errors = result["errors"]
    assert isinstance(errors, list) and len(errors) == 1 and "NUL bytes" in errors[0]


REFRESHER = r"""
import json, os, sys
from pathlib import Path
from agent.filter.lists import index as I, split as S
from agent.filter.lists.model import ListSpec
from agent.filter.lists.refresh import ListRefresher

original = S.Forked.__init__
def failing(self, work):
    def fails():
        raise RuntimeError("the child fails")
    original(self, fails)
S.Forked.__init__ = failing
I.SPLIT_MIN = 1000
source, cache = sys.argv[1], Path(sys.argv[2])
index, stats = ListRefresher([ListSpec(source=source, category="c")], cache).load()
names = Path(source).read_text().split()
print(json.dumps({"size": len(index), "blocked": sum(bool(index.lookup(n)) for n in names),
                  "entries": stats[0].entries}))
"""


def test_a_failed_index_child_at_load_means_parsing_again_not_an_empty_index(
    tmp_path: Path,
) -> None:
    """ListRefresher.load builds with consume=True; if the child dies the hashes are gone, so
    the lists are parsed again and built here: the same index, nothing left out."""
    rng = random.Random(5)
    listed = sorted(set(names(rng, 5_000)))
    path = tmp_path / "list.txt"
    path.write_text("\n".join(listed) + "\n", encoding="utf-8")
    result, stderr = script(REFRESHER, [str(path), str(tmp_path / "cache")])
    assert result == {"size": len(listed), "blocked": len(listed), "entries": len(listed)}
    assert "parsing the lists again" in stderr
