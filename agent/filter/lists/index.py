"""CategoryIndex: every listed name of every category in one compact, immutable hash table.

Layout: open addressing with linear probing over `array('q')` of 64-bit name hashes (0 marks
an empty slot; a hash of 0 is stored as 1), with a parallel array of packed category masks.
Each slot holds four bit planes of `width` bits each, one per rule kind (model.SELF_BLOCK,
SUB_BLOCK, SELF_EXCEPT, SUB_EXCEPT), so a name that is blocked by one category, wildcarded by
another and excepted by a third still costs one slot. With more than 16 categories the planes
live in four separate arrays instead of one packed word.

A lookup hashes each suffix of the name (skipping label depths no list uses) and probes the
table; a miss ends at the first empty slot (load factor <= 0.5, so about 2.5 probes).

Hashes are CPython's hash() of the str (SipHash-1-3, 64-bit, randomised per process; the
index is built and used in the same process). Two different names share a hash with
probability 2**-64: with 1,000,000 listed names, one suffix lookup wrongly matches with
probability about 1e6 / 1.8e19 = 5e-14, i.e. one false block in ~2e13 suffix lookups (about
5,000 years at 100,000 suffix lookups a second). The names themselves are not kept.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat, tee
from operator import ge, lt, mod

from agent.filter.lists.model import (
    SELF_BLOCK,
    SELF_EXCEPT,
    SUB_BLOCK,
    SUB_EXCEPT,
    ListError,
    ListSpec,
)
from agent.filter.lists.parser import ParsedList
from agent.filter.lists.split import Forked

log = logging.getLogger(__name__)

MAX_CATEGORIES = 64
SPLIT_MIN = 200_000  # names from which a cold build fills the table in two processes
LOAD_FACTOR = 0.5
_PLANES = (SELF_BLOCK, SUB_BLOCK, SELF_EXCEPT, SUB_EXCEPT)


@dataclass(frozen=True, slots=True)
class IndexParts:
    """The table of a CategoryIndex: hashes, mask arrays (one packed, or four planes), capacity
    (slots probed from; keys may be longer, ending in empty sentinels), names, label depths."""

    keys: array[int]
    masks: tuple[array[int], ...]
    cap: int
    size: int
    depths: int


def _mask_typecode(bits: int) -> str:
    for code in ("B", "H", "I", "L", "Q"):
        if array(code).itemsize * 8 >= bits:
            return code
    raise ListError(f"{bits}-bit masks are not supported")  # unreachable: Q is 64-bit


class CategoryIndex:
    """Immutable map from names to the categories that block them; swap whole on reload."""

    __slots__ = (
        "_cap",
        "_depths",
        "_keys",
        "_masks",
        "_planes",
        "_size",
        "_width",
        "_wmask",
        "categories",
        "statutory_mask",
    )

    def __init__(
        self,
        categories: tuple[str, ...],
        keys: array[int],
        masks: Sequence[array[int]],
        cap: int,
        size: int,
        depths: int,
        statutory_mask: int = 0,
    ) -> None:
        self.categories = categories
        self.statutory_mask = statutory_mask
        self._keys = keys
        self._planes = len(masks) == 4
        self._masks = tuple(masks)
        self._cap = cap
        self._size = size
        self._depths = depths
        self._width = len(categories)
        self._wmask = (1 << self._width) - 1

    @classmethod
    def empty(cls) -> CategoryIndex:
        """An index that blocks nothing."""
        return cls((), array("q", [0, 0]), [array("B", [0, 0])], 1, 0, 0)

    def __len__(self) -> int:
        """Distinct listed names."""
        return self._size

    def parts(self) -> IndexParts:
        """The arrays and sizes that make up the table (for the compiled copy on disk)."""
        return IndexParts(self._keys, self._masks, self._cap, self._size, self._depths)

    def bit(self, category: str) -> int:
        """The mask bit of a category, or 0 if no list feeds it."""
        try:
            return 1 << self.categories.index(category)
        except ValueError:
            return 0

    def names(self, mask: int) -> tuple[str, ...]:
        """The categories whose bits are set in the mask, in bit order."""
        return tuple(c for i, c in enumerate(self.categories) if mask >> i & 1)

    def lookup(self, qname: str) -> int:
        """The categories blocking a normalised name (0: none). A block on the name or a parent
        applies unless an exception of the same category covers the name."""
        keys = self._keys
        cap = self._cap
        depths = self._depths
        labels = qname.split(".")
        depth = len(labels)
        pos = 0
        blocked = excepted = 0
        for label in labels:
            if depths >> depth & 1:
                h = hash(qname[pos:]) or 1
                j = h % cap
                k = keys[j]
                while k:
                    if k == h:
                        b, e = self._hit(j, pos == 0)
                        blocked |= b
                        excepted |= e
                        break
                    j += 1
                    k = keys[j]
            pos += len(label) + 1
            depth -= 1
        return blocked & ~excepted

    def _hit(self, slot: int, itself: bool) -> tuple[int, int]:
        masks = self._masks
        if self._planes:
            if itself:
                return masks[0][slot], masks[2][slot]
            return masks[1][slot], masks[3][slot]
        width = self._width
        value = masks[0][slot]
        if itself:
            return value & self._wmask, value >> 2 * width & self._wmask
        return value >> width & self._wmask, value >> 3 * width


class ChildBuildFailed(ListError):
    """build_index(consume=True) gave the table to a child process that failed, and the
    parsed hashes are gone: parse the lists again and build without consume."""


def build_index(
    categories: tuple[str, ...],
    lists: Sequence[ParsedList],
    statutory: frozenset[str] = frozenset(),
    *,
    consume: bool = False,
) -> CategoryIndex:
    """Build one index from parsed lists; each list's stats.category names its bit.

    `consume`: the caller is done with the lists' hashes. A big table is then filled by a
    forked child while this process drops the hashes (the child keeps its copy-on-write view)
    and only receives the finished table: this process never holds the hashes (8 bytes a
    name) and the table (about 18 bytes a name) at once, so a cold start's peak is no higher
    than what it then serves with. Raises ChildBuildFailed if that child failed."""
    if len(categories) > MAX_CATEGORIES:
        raise ListError(f"{len(categories)} categories: at most {MAX_CATEGORIES} are supported")
    width = len(categories)
    total = sum(len(parsed) for parsed in lists)
    cap = max(8, int(total / LOAD_FACTOR) + 1)
    planes = width > 16
    code = "Q" if planes else _mask_typecode(4 * width)
    jobs: list[_Job] = []
    depths = 0
    for parsed in lists:
        depths |= parsed.depths
        bit = 1 << categories.index(parsed.stats.category)
        for kind, hashes in parsed.kinds.items():
            if planes:
                jobs += [(hashes, p, bit) for p, k in enumerate(_PLANES) if kind & k]
            else:  # one packed word carries every plane of this kind
                value = sum(bit << p * width for p, k in enumerate(_PLANES) if kind & k)
                jobs.append((hashes, 0, value))
    count = 4 if planes else 1
    made = (
        _filled_by_child(cap, code, count, jobs, total) if consume and total >= SPLIT_MIN else None
    )
    if made is None:
        made = _filled(cap, code, count, jobs, total)
    keys, masks = made
    statutory_mask = 0
    for category in statutory:
        if category in categories:
            statutory_mask |= 1 << categories.index(category)
    size = len(keys) - keys.count(0)
    return CategoryIndex(categories, keys, masks, cap, size, depths, statutory_mask)


_Job = tuple["array[int]", int, int]  # hashes, mask plane, value to OR in


def _filled(
    cap: int, code: str, planes: int, jobs: list[_Job], total: int
) -> tuple[array[int], list[array[int]]]:
    """The table (keys, masks) of every job's hashes: filled in two processes when there are
    many, else here."""
    keys = array("q", [0]) * (cap + 1)  # the extra slot is the probe sentinel
    masks = [array(code, [0]) * (cap + 1) for _ in range(planes)]
    if total < SPLIT_MIN or not _fill_split(keys, masks, cap, jobs):
        for hashes, plane, value in jobs:
            _place(keys, masks, masks[plane], cap, hashes, value)
    return keys, masks


def _filled_by_child(
    cap: int, code: str, planes: int, jobs: list[_Job], total: int
) -> tuple[array[int], list[array[int]]] | None:
    """The table, filled by a forked child (itself splitting the work with one of its own,
    _filled) and read back here, after the hashes were dropped here. None if no child could
    start (nothing dropped: the caller fills it); ChildBuildFailed if the child failed."""

    def work() -> list[memoryview]:
        keys, masks = _filled(cap, code, planes, jobs, total)
        return [memoryview(table).cast("B") for table in (keys, *masks)]

    child = Forked(work)
    if not child.started:
        return None
    for hashes, _, _ in jobs:
        del hashes[:]  # frees the buffer here; the child reads its own copy
    codes = ["q", *([code] * planes)]
    tables: list[array[int]] = []

    def into(i: int, size: int) -> memoryview:
        """Table i, made zeroed at its final size (array * n: no temporary, no Python loop)."""
        tables.append(array(codes[i], [0]) * (size // array(codes[i]).itemsize))
        return memoryview(tables[i]).cast("B")

    if not child.result(into) or len(tables) != 1 + planes or len(tables[0]) < cap + 1:
        raise ChildBuildFailed("building the list index in a child process failed")
    return tables[0], tables[1:]


def _fill_split(keys: array[int], masks: list[array[int]], cap: int, jobs: list[_Job]) -> bool:
    """Fill the table in two processes: a forked child takes the names whose home slot is in
    the upper half, this process the lower half. False if no child could run (nothing was
    filled then). Linear probing stays correct: a name of the lower half that would probe past
    the middle is held back and placed last, when the upper half is in."""
    half = cap // 2

    def fill(upper: bool, stop: int | None) -> list[_Job]:
        """Place the names whose home slot is in one half; return those held back."""
        side = ge if upper else lt
        held: list[_Job] = []
        for hashes, plane, value in jobs:
            # Streamed, not collected: a freed multi-MB temporary would raise glibc's mmap
            # threshold and leave later frees resident (measured: +5 MB RSS after the build).
            mine, again = tee(
                compress(hashes, map(side, map(mod, hashes, repeat(cap)), repeat(half)))
            )
            back = _place(keys, masks, masks[plane], cap, mine, value, stop=stop, homes=again)
            if back:
                held.append((back, plane, value))
        return held

    def upper() -> list[memoryview]:
        fill(True, None)
        return [memoryview(table).cast("B")[half * table.itemsize :] for table in (keys, *masks)]

    child = Forked(upper)
    if not child.started:
        return False
    held = fill(False, half)
    tables = [keys, *masks]

    def into(i: int, size: int) -> memoryview:
        table = tables[i]
        items = size // table.itemsize
        if half + items > len(table):  # the child appended probe sentinels
            table.extend(repeat(0, half + items - len(table)))
        start = half * table.itemsize
        return memoryview(table).cast("B")[start : start + size]

    if not child.result(into):
        log.warning("filling the index in a child process failed; filling it here")
        for table in tables:
            del table[cap + 1 :]
            table[half:] = array(table.typecode, [0]) * (cap + 1 - half)
        fill(True, None)
    for hashes, plane, value in held:
        _place(keys, masks, masks[plane], cap, hashes, value)
    return True


def _place(
    keys: array[int],
    masks: list[array[int]],
    target: array[int],
    cap: int,
    hashes: Iterable[int],
    value: int,
    stop: int | None = None,
    homes: Iterable[int] | None = None,
) -> array[int]:
    """OR value into target at the slot of every hash, claiming empty slots (hashes are never
    0: the reader maps 0 to 1). A hash that would take a slot at or past `stop` is left out
    and returned. `homes`: the same hashes again, when `hashes` is a one-pass iterator. First
    every hash whose home slot is free takes it (the common case at load factor 0.5: no
    probing), then the rest probe."""
    collided = array("q")
    slots = map(mod, hashes if homes is None else homes, repeat(cap))
    for h, j in zip(hashes, slots, strict=False):  # the same hashes
        if keys[j]:
            collided.append(h)
        else:
            keys[j] = h
            target[j] = value
    back = array("q")
    limit = len(keys) if stop is None else stop
    for h in collided:
        j = h % cap
        k = keys[j]
        while k and k != h:
            j += 1
            k = keys[j]
        if j >= limit:
            back.append(h)
            continue
        if not k:
            keys[j] = h
            if j == len(keys) - 1:  # keep an empty sentinel after the last slot
                keys.append(0)
                for mask in masks:
                    mask.append(0)
                limit = len(keys) if stop is None else stop
        target[j] |= value
    return back


def categories_of(specs: Sequence[ListSpec]) -> tuple[str, ...]:
    """The categories in order of first appearance: bit i of a mask is categories[i]."""
    return tuple(dict.fromkeys(spec.category for spec in specs))


def index_of(
    specs: Sequence[ListSpec], parsed: Sequence[ParsedList], *, consume: bool = False
) -> CategoryIndex:
    """Build the index of the given specs from their parsed lists (`consume`: build_index)."""
    statutory = frozenset(spec.category for spec in specs if spec.statutory)
    return build_index(categories_of(specs), parsed, statutory, consume=consume)
