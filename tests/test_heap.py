"""common/heap.py: glibc's allocator settings the edge daemons use, measured in a fresh
interpreter (RSS from /proc/self/status)."""

from __future__ import annotations

import subprocess
import sys

_FREED = """
import sys
from common import heap
if sys.argv[1] == "fixed":
    assert heap.fix_mmap_threshold()
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
big = bytearray(8 << 20)
del big  # glibc now serves everything under 8 MiB from the heap, unless the threshold is fixed
before = rss()
blocks, pins = [], []
for _ in range(16):
    blocks.append(bytearray(1 << 20))  # touched: bytearray zero-fills
    pins.append(bytearray(2000))  # a heap allocation after each, so freed blocks are holes
del blocks
print(round(rss() - before, 1))
"""


def _left_resident(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _FREED, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


def test_a_fixed_mmap_threshold_gives_freed_buffers_back_after_a_big_one_was_freed() -> None:
    """The cold start's case: a multi-MiB array freed, then MiB-sized tables made and freed.
    Without the fixed threshold they stay resident (16 MiB here); with it they go."""
    assert _left_resident("default") > 12
    assert _left_resident("fixed") < 2
